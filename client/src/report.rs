//! How an error reads to an operator: the cause chain on one line, each cause once.
//!
//! Many error types name their cause in their own message and also return it as their
//! `source()` (a thiserror variant with `{source}` or `{0}` in its message and a `source`
//! field, `#[source]` or `#[from]`). Rendering the chain the usual way (anyhow's `{:#}`) then
//! prints that cause twice: `cannot read ca.pem: No such file or directory (os error 2): No
//! such file or directory (os error 2)`. [`render_chain`] leaves out a cause whose text the line
//! already holds. The `ferry` and `ferryd` binaries print their errors with it; logs keep each
//! error's own message, which names its cause.

use std::error::Error;

/// The messages of `chain` (outermost first) joined by `": "`, leaving out each one whose
/// text is already part of what came before it.
pub fn render_chain<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut line = String::new();
    for error in chain {
        let text = error.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ClientError;
    use crate::pki::{self, PkiError};
    use ferry_net::tls::{Credentials, TlsPaths};
    use std::path::Path;

    /// The segments of a rendered line that appear more than once.
    fn repeated(line: &str) -> Vec<&str> {
        let segments: Vec<&str> = line.split(": ").collect();
        let mut seen = Vec::new();
        let mut twice = Vec::new();
        for s in segments {
            if seen.contains(&s) {
                twice.push(s);
            }
            seen.push(s);
        }
        twice
    }

    fn load(dir: &Path, ca: &str, cert: &str, key: &str) -> anyhow::Error {
        let paths = TlsPaths { ca: dir.join(ca), cert: dir.join(cert), key: dir.join(key), crl: None };
        let err = Credentials::load(&paths).map_err(ClientError::from).expect_err("must fail");
        anyhow::Error::new(err).context("cannot load the credentials")
    }

    /// What an operator reads after a missing file, a bad key, an unknown CA directory and a
    /// refused request: every cause once.
    #[test]
    fn representative_errors_name_each_cause_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        pki::init(&ca_dir, "root", time::Duration::days(1)).expect("init");
        std::fs::write(
            dir.path().join("bad.key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let unknown_ca = pki::list(&dir.path().join("nowhere")).expect_err("no CA there");
        let io = PkiError::Io {
            path: dir.path().join("issued.json"),
            source: std::io::Error::other("disk on fire"),
        };
        let refused =
            ClientError::Remote { code: ferry_proto::ErrorCode::NotFound, message: "no such dataset".into() };
        let errors = [
            load(dir.path(), "missing-ca.pem", "c.pem", "k.pem"),
            load(&ca_dir, "ca.pem", "ca.pem", "../bad.key"),
            anyhow::Error::new(unknown_ca).context("ferry pki list"),
            anyhow::Error::new(io).context("ferry pki revoke"),
            anyhow::Error::new(refused).context("pull refused"),
        ];
        for err in &errors {
            let line = render_chain(err.chain());
            assert!(repeated(&line).is_empty(), "{line}");
            // Nothing is lost: the innermost cause is on the line.
            let innermost = err.chain().last().expect("a chain").to_string();
            assert!(line.contains(&innermost), "{line} lacks {innermost}");
        }
        let missing = render_chain(errors[0].chain());
        assert!(missing.contains("missing-ca.pem") && missing.contains("No such file"), "{missing}");
    }
}
