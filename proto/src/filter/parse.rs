//! The lexer and the recursive-descent parser of [`super::RowFilter`]: text to predicates, with
//! every error naming the token and its position (characters from 1). Canonical ordering is
//! left to the caller (`RowFilter::from_predicates`).

use super::{
    CmpOp, Date, Decimal, FilterError, Literal, MAX_COLUMN_LEN, MAX_CONDITIONS, MAX_FILTER_LEN,
    MAX_IN_VALUES, MAX_NESTING, Predicate, Test, is_keyword,
};

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A bare word: a column name or a keyword.
    Word(String),
    /// A double-quoted column name.
    Quoted(String),
    Str(String),
    Number(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Characters from 1.
    position: usize,
    text: String,
}

pub(super) fn parse(text: &str) -> Result<Vec<Predicate>, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError::TooLong { len: text.len(), max: MAX_FILTER_LEN });
    }
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut parser = Parser { tokens, next: 0, end: text.chars().count() + 1, out: Vec::new() };
    parser.conjunction(0)?;
    if let Some(token) = parser.peek() {
        return Err(unexpected(token, "AND or the end of the filter"));
    }
    Ok(parser.out)
}

fn unexpected(token: &Token, expected: &'static str) -> FilterError {
    FilterError::Unexpected { position: token.position, found: token.text.clone(), expected }
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' | ')' | ',' => {
                i += 1;
                match c {
                    '(' => Kind::LParen,
                    ')' => Kind::RParen,
                    _ => Kind::Comma,
                }
            }
            '=' | '<' | '>' | '!' => lex_op(&chars, &mut i)?,
            '\'' => Kind::Str(lex_quoted(&chars, &mut i, '\'')?),
            '"' => Kind::Quoted(lex_quoted(&chars, &mut i, '"')?),
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                Kind::Number(chars[start..i].iter().collect())
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Kind::Word(chars[start..i].iter().collect())
            }
            other => {
                return Err(FilterError::Unexpected {
                    position: start + 1,
                    found: format!("{other:?}"),
                    expected: "a column, an operator or a literal",
                });
            }
        };
        tokens.push(Token { kind, position: start + 1, text: chars[start..i].iter().collect() });
    }
    Ok(tokens)
}

fn lex_op(chars: &[char], i: &mut usize) -> Result<Kind, FilterError> {
    let first = chars[*i];
    let second = chars.get(*i + 1).copied();
    let (op, len) = match (first, second) {
        ('<', Some('=')) => (CmpOp::Le, 2),
        ('>', Some('=')) => (CmpOp::Ge, 2),
        ('!', Some('=')) | ('<', Some('>')) => (CmpOp::Ne, 2),
        ('<', _) => (CmpOp::Lt, 1),
        ('>', _) => (CmpOp::Gt, 1),
        ('=', _) => (CmpOp::Eq, 1),
        _ => {
            return Err(FilterError::Unexpected {
                position: *i + 1,
                found: "!".into(),
                expected: "!= (NOT is not supported)",
            });
        }
    };
    *i += len;
    Ok(Kind::Op(op))
}

/// A quoted string or name starting at `chars[*i]`; a doubled quote inside is one quote.
fn lex_quoted(chars: &[char], i: &mut usize, quote: char) -> Result<String, FilterError> {
    let start = *i;
    let mut value = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => {
                return Err(FilterError::Unexpected {
                    position: start + 1,
                    found: chars[start..].iter().take(20).collect(),
                    expected: "a closing quote",
                });
            }
            Some(&c) if c == quote => {
                if chars.get(*i + 1) == Some(&quote) {
                    value.push(quote);
                    *i += 2;
                } else {
                    *i += 1;
                    return Ok(value);
                }
            }
            Some(&c) => {
                value.push(c);
                *i += 1;
            }
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// The position reported for "end of filter".
    end: usize,
    out: Vec<Predicate>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self, expected: &'static str) -> Result<Token, FilterError> {
        match self.tokens.get(self.next) {
            Some(token) => {
                self.next += 1;
                Ok(token.clone())
            }
            None => {
                Err(FilterError::Unexpected { position: self.end, found: "end of filter".into(), expected })
            }
        }
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn expect_keyword(&mut self, keyword: &'static str) -> Result<(), FilterError> {
        let token = self.bump(keyword)?;
        match &token.kind {
            Kind::Word(w) if w.eq_ignore_ascii_case(keyword) => Ok(()),
            _ => Err(unexpected(&token, keyword)),
        }
    }

    fn conjunction(&mut self, depth: usize) -> Result<(), FilterError> {
        loop {
            self.group(depth)?;
            if self.peek_keyword("AND") {
                self.next += 1;
            } else if self.peek_keyword("OR") {
                let token = self.bump("AND")?;
                return Err(FilterError::Unsupported {
                    position: token.position,
                    token: token.text,
                    hint: "a row filter is a conjunction (AND) of conditions",
                });
            } else {
                return Ok(());
            }
        }
    }

    fn group(&mut self, depth: usize) -> Result<(), FilterError> {
        if matches!(self.peek(), Some(Token { kind: Kind::LParen, .. })) {
            let open = self.bump("(")?;
            if depth + 1 > MAX_NESTING {
                return Err(FilterError::TooDeep { position: open.position, max: MAX_NESTING });
            }
            self.conjunction(depth + 1)?;
            let close = self.bump(")")?;
            return match close.kind {
                Kind::RParen => Ok(()),
                _ => Err(unexpected(&close, "AND or )")),
            };
        }
        let predicate = self.condition()?;
        if self.out.len() == MAX_CONDITIONS {
            let position = self.tokens[self.next - 1].position;
            return Err(FilterError::TooManyConditions { position, max: MAX_CONDITIONS });
        }
        self.out.push(predicate);
        Ok(())
    }

    fn column(&mut self) -> Result<String, FilterError> {
        const WHAT: &str = "a column name";
        let token = self.bump(WHAT)?;
        let name = match &token.kind {
            Kind::Word(w) if w.eq_ignore_ascii_case("NOT") => {
                return Err(FilterError::Unsupported {
                    position: token.position,
                    token: token.text,
                    hint: "negate the comparison instead (!=, IS NOT NULL)",
                });
            }
            Kind::Word(w) if !is_keyword(w) => w.clone(),
            Kind::Quoted(q) => q.clone(),
            _ => return Err(unexpected(&token, WHAT)),
        };
        let valid_start = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        let valid_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_start || !valid_rest || name.len() > MAX_COLUMN_LEN {
            return Err(unexpected(&token, "a column name [A-Za-z_][A-Za-z0-9_]* of at most 64 bytes"));
        }
        Ok(name)
    }

    fn condition(&mut self) -> Result<Predicate, FilterError> {
        let column = self.column()?;
        const WHAT: &str = "an operator, BETWEEN, IN or IS";
        let token = self.bump(WHAT)?;
        let test = match &token.kind {
            Kind::Op(op) => Test::Compare { op: *op, value: self.literal()? },
            Kind::Word(w) if w.eq_ignore_ascii_case("BETWEEN") => {
                let low = self.literal()?;
                self.expect_keyword("AND")?;
                Test::Between { low, high: self.literal()? }
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("IN") => Test::In(self.in_list()?),
            Kind::Word(w) if w.eq_ignore_ascii_case("IS") => {
                let not = self.peek_keyword("NOT");
                if not {
                    self.next += 1;
                }
                self.expect_keyword("NULL")?;
                if not { Test::IsNotNull } else { Test::IsNull }
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("NOT") => {
                return Err(FilterError::Unsupported {
                    position: token.position,
                    token: token.text,
                    hint: "NOT IN and NOT BETWEEN are not part of the row filter language",
                });
            }
            _ => return Err(unexpected(&token, WHAT)),
        };
        Ok(Predicate { column, test })
    }

    fn in_list(&mut self) -> Result<Vec<Literal>, FilterError> {
        let open = self.bump("(")?;
        if open.kind != Kind::LParen {
            return Err(unexpected(&open, "( after IN"));
        }
        let mut values = Vec::new();
        loop {
            if values.len() == MAX_IN_VALUES {
                return Err(FilterError::TooManyValues { position: open.position, max: MAX_IN_VALUES });
            }
            values.push(self.literal()?);
            let token = self.bump(", or )")?;
            match token.kind {
                Kind::Comma => {}
                Kind::RParen => return Ok(values),
                _ => return Err(unexpected(&token, ", or )")),
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        const WHAT: &str = "a literal (number, 'text', TRUE, FALSE, DATE 'YYYY-MM-DD')";
        let token = self.bump(WHAT)?;
        match &token.kind {
            Kind::Number(n) => number(n, &token),
            Kind::Str(s) => Ok(Literal::Text(s.clone())),
            Kind::Word(w) if w.eq_ignore_ascii_case("TRUE") => Ok(Literal::Bool(true)),
            Kind::Word(w) if w.eq_ignore_ascii_case("FALSE") => Ok(Literal::Bool(false)),
            Kind::Word(w) if w.eq_ignore_ascii_case("NULL") => Err(FilterError::Unsupported {
                position: token.position,
                token: token.text.clone(),
                hint: "compare with IS NULL or IS NOT NULL",
            }),
            Kind::Word(w) if w.eq_ignore_ascii_case("DATE") => {
                let value = self.bump("'YYYY-MM-DD' after DATE")?;
                match &value.kind {
                    Kind::Str(s) => date(s, &value).map(Literal::Date),
                    _ => Err(unexpected(&value, "'YYYY-MM-DD' after DATE")),
                }
            }
            _ => Err(unexpected(&token, WHAT)),
        }
    }
}

fn bad(token: &Token, reason: &'static str) -> FilterError {
    FilterError::BadLiteral { position: token.position, token: token.text.clone(), reason }
}

/// Integers and decimals: `-?[0-9]+(\.[0-9]+)?`, at most 38 digits.
fn number(text: &str, token: &Token) -> Result<Literal, FilterError> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(bad(token, "a number is -?digits or -?digits.digits"));
    }
    let frac = frac.map(|f| f.trim_end_matches('0')).map(|f| if f.is_empty() { "0" } else { f });
    let all: String = [int, frac.unwrap_or("")].concat();
    if all.trim_start_matches('0').len() > 38 {
        return Err(bad(token, "more than 38 digits"));
    }
    let magnitude: i128 = all.parse().map_err(|_| bad(token, "not a number"))?;
    let mantissa = if negative { -magnitude } else { magnitude };
    Ok(match frac {
        None => Literal::Integer(mantissa),
        Some(f) => Literal::Decimal(Decimal { mantissa, scale: f.len() as u8 }),
    })
}

fn date(text: &str, token: &Token) -> Result<Date, FilterError> {
    const FORM: &str = "a date is 'YYYY-MM-DD', years 0001 to 9999";
    let bytes = text.as_bytes();
    let shape = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes.iter().enumerate().all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape {
        return Err(bad(token, FORM));
    }
    let field = |range: std::ops::Range<usize>| text[range].parse::<i32>().unwrap_or(0);
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if year < 1 || day < 1 || day > days_in_month {
        return Err(bad(token, "no such day in the calendar"));
    }
    Ok(Date { year, month: month as u8, day: day as u8 })
}
