//! Word lists and weighted tables behind the synthetic transport datasets: provinces (plate
//! abbreviation, administrative code, cities, a point to start GPS tracks), manufacturers (WMI
//! and brand), vehicle types, names and company words. Figures are plausible, not statistics.

use rand::Rng;

/// Broad kind of vehicle; decides types, brands, fuels and who owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Car,
    Truck,
    Bus,
}

pub(crate) struct Province {
    pub abbr: &'static str,
    pub code: &'static str,
    pub weight: u32,
    /// How many plate city letters the province uses (A, B, … skipping I and O).
    pub city_letters: usize,
    pub cities: &'static [&'static str],
    pub lon: f64,
    pub lat: f64,
    pub altitude_m: f32,
}

macro_rules! province {
    ($abbr:literal, $code:literal, $w:literal, $letters:literal, [$($city:literal),+], $lon:literal, $lat:literal, $alt:literal) => {
        Province { abbr: $abbr, code: $code, weight: $w, city_letters: $letters, cities: &[$($city),+], lon: $lon, lat: $lat, altitude_m: $alt }
    };
}

pub(crate) const PROVINCES: &[Province] = &[
    province!("京", "110000", 4, 16, ["北京"], 116.40, 39.90, 44.0),
    province!("津", "120000", 2, 12, ["天津"], 117.20, 39.13, 5.0),
    province!("冀", "130000", 6, 11, ["石家庄", "唐山", "保定", "邯郸"], 114.51, 38.04, 80.0),
    province!("晋", "140000", 2, 11, ["太原", "大同", "长治"], 112.55, 37.87, 800.0),
    province!("蒙", "150000", 2, 12, ["呼和浩特", "包头", "鄂尔多斯"], 111.75, 40.84, 1050.0),
    province!("辽", "210000", 3, 14, ["沈阳", "大连", "鞍山"], 123.43, 41.80, 50.0),
    province!("吉", "220000", 2, 9, ["长春", "吉林", "延边"], 125.32, 43.82, 220.0),
    province!("黑", "230000", 2, 13, ["哈尔滨", "齐齐哈尔", "大庆"], 126.53, 45.80, 150.0),
    province!("沪", "310000", 3, 14, ["上海"], 121.47, 31.23, 4.0),
    province!("苏", "320000", 8, 13, ["南京", "苏州", "无锡", "徐州"], 118.80, 32.06, 10.0),
    province!("浙", "330000", 8, 11, ["杭州", "宁波", "温州", "金华"], 120.16, 30.27, 10.0),
    province!("皖", "340000", 3, 17, ["合肥", "芜湖", "阜阳"], 117.23, 31.82, 30.0),
    province!("闽", "350000", 3, 9, ["福州", "厦门", "泉州"], 119.30, 26.08, 20.0),
    province!("赣", "360000", 2, 12, ["南昌", "赣州", "九江"], 115.86, 28.68, 30.0),
    province!("鲁", "370000", 8, 17, ["济南", "青岛", "临沂", "潍坊"], 117.00, 36.65, 40.0),
    province!("豫", "410000", 6, 18, ["郑州", "洛阳", "南阳"], 113.63, 34.75, 100.0),
    province!("鄂", "420000", 3, 17, ["武汉", "襄阳", "宜昌"], 114.31, 30.59, 30.0),
    province!("湘", "430000", 3, 14, ["长沙", "株洲", "岳阳"], 112.94, 28.23, 50.0),
    province!("粤", "440000", 10, 21, ["广州", "深圳", "东莞", "佛山"], 113.26, 23.13, 20.0),
    province!("桂", "450000", 3, 14, ["南宁", "柳州", "桂林"], 108.37, 22.82, 80.0),
    province!("琼", "460000", 1, 5, ["海口", "三亚"], 110.35, 20.02, 10.0),
    province!("渝", "500000", 2, 4, ["重庆"], 106.55, 29.56, 250.0),
    province!("川", "510000", 5, 20, ["成都", "绵阳", "宜宾"], 104.07, 30.57, 500.0),
    province!("贵", "520000", 2, 9, ["贵阳", "遵义"], 106.63, 26.65, 1100.0),
    province!("云", "530000", 3, 16, ["昆明", "曲靖", "大理"], 102.83, 24.88, 1890.0),
    province!("藏", "540000", 1, 7, ["拉萨", "日喀则"], 91.13, 29.65, 3650.0),
    province!("陕", "610000", 3, 10, ["西安", "宝鸡", "榆林"], 108.94, 34.34, 400.0),
    province!("甘", "620000", 1, 14, ["兰州", "天水", "酒泉"], 103.83, 36.06, 1520.0),
    province!("青", "630000", 1, 8, ["西宁", "海西"], 101.78, 36.62, 2260.0),
    province!("宁", "640000", 1, 5, ["银川", "石嘴山"], 106.23, 38.49, 1110.0),
    province!("新", "650000", 2, 16, ["乌鲁木齐", "喀什", "伊犁"], 87.62, 43.83, 800.0),
];

/// Plate letters (also plate city letters): no I or O.
pub(crate) const PLATE_LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

pub(crate) struct Maker {
    pub wmi: &'static [u8; 3],
    pub brand: &'static str,
    pub category: Category,
    pub weight: u32,
    /// (fuel, weight) for a maker of new-energy vehicles only; empty: the category's fuels.
    pub fuels: &'static [(&'static str, u32)],
}

const fn maker(wmi: &'static [u8; 3], brand: &'static str, category: Category, weight: u32) -> Maker {
    Maker { wmi, brand, category, weight, fuels: &[] }
}

pub(crate) const MAKERS: &[Maker] = &[
    maker(b"LSV", "大众", Category::Car, 14),
    maker(b"LFV", "大众", Category::Car, 14),
    maker(b"LVG", "丰田", Category::Car, 12),
    maker(b"LHG", "本田", Category::Car, 11),
    maker(b"LSG", "别克", Category::Car, 9),
    maker(b"LGB", "日产", Category::Car, 9),
    maker(b"L6T", "吉利", Category::Car, 8),
    maker(b"LS5", "长安", Category::Car, 8),
    maker(b"LGW", "哈弗", Category::Car, 6),
    maker(b"LBV", "宝马", Category::Car, 4),
    maker(b"LZW", "五菱", Category::Car, 6),
    Maker { fuels: &[("纯电动", 6), ("插电混动", 4)], ..maker(b"LGX", "比亚迪", Category::Car, 2) },
    Maker { fuels: &[("纯电动", 1)], ..maker(b"LRW", "特斯拉", Category::Car, 1) },
    maker(b"LFW", "解放", Category::Truck, 5),
    maker(b"LGA", "东风", Category::Truck, 4),
    maker(b"LZZ", "中国重汽", Category::Truck, 4),
    maker(b"LZG", "陕汽", Category::Truck, 3),
    maker(b"LVB", "福田", Category::Truck, 3),
    maker(b"LJ1", "江淮", Category::Truck, 2),
    maker(b"LZY", "宇通", Category::Bus, 2),
    maker(b"LKL", "金龙", Category::Bus, 1),
    maker(b"LCK", "中通", Category::Bus, 1),
];

pub(crate) struct VehicleType {
    pub name: &'static str,
    pub weight: u32,
    pub seats: (i16, i16),
    pub mass_kg: (i32, i32),
}

const fn vt(name: &'static str, weight: u32, seats: (i16, i16), mass_kg: (i32, i32)) -> VehicleType {
    VehicleType { name, weight, seats, mass_kg }
}

const CAR_TYPES: &[VehicleType] = &[
    vt("小型轿车", 45, (5, 5), (1_350, 2_300)),
    vt("小型普通客车", 35, (5, 7), (1_600, 2_700)),
    vt("小型越野客车", 12, (5, 7), (1_900, 3_100)),
    vt("微型普通客车", 8, (7, 8), (1_300, 1_800)),
];

const TRUCK_TYPES: &[VehicleType] = &[
    vt("重型半挂牵引车", 30, (2, 3), (25_000, 49_000)),
    vt("重型厢式货车", 15, (2, 3), (18_000, 31_000)),
    vt("中型厢式货车", 15, (3, 3), (6_000, 12_000)),
    vt("轻型厢式货车", 20, (2, 3), (3_500, 4_495)),
    vt("重型自卸货车", 10, (2, 3), (25_000, 31_000)),
    vt("重型罐式货车", 10, (2, 3), (25_000, 31_000)),
];

const BUS_TYPES: &[VehicleType] =
    &[vt("大型普通客车", 60, (35, 57), (14_000, 18_000)), vt("中型普通客车", 40, (10, 19), (5_000, 8_000))];

pub(crate) fn vehicle_types(category: Category) -> &'static [VehicleType] {
    match category {
        Category::Car => CAR_TYPES,
        Category::Truck => TRUCK_TYPES,
        Category::Bus => BUS_TYPES,
    }
}

/// (fuel, weight) per category. 纯电动 and 插电混动 get new-energy plates.
pub(crate) fn fuels(category: Category) -> &'static [(&'static str, u32)] {
    match category {
        Category::Car => &[("汽油", 93), ("纯电动", 1), ("插电混动", 1), ("柴油", 2), ("天然气", 3)],
        Category::Truck => &[("柴油", 85), ("天然气", 13), ("纯电动", 2)],
        Category::Bus => &[("柴油", 40), ("天然气", 30), ("纯电动", 25), ("插电混动", 5)],
    }
}

pub(crate) const STATUSES: &[(&str, u32)] = &[("正常", 92), ("注销", 3), ("查封", 1), ("报废", 4)];

pub(crate) const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何",
    "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾", "肖", "田",
    "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁", "任", "沈", "姚",
    "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金", "石", "廖", "贾", "夏",
];

pub(crate) const GIVEN_CHARS: &[&str] = &[
    "伟", "芳", "娜", "秀", "英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "兰", "霞", "平", "刚", "桂", "华", "建", "国", "文", "辉", "玲", "鹏", "宇", "浩", "凯",
    "婷", "雪", "琳", "欣", "博", "志", "海", "波", "红", "梅", "斌", "晨", "阳", "亮",
];

pub(crate) const COMPANY_WORDS: &[&str] = &[
    "顺达", "通运", "宏远", "安达", "鑫源", "恒通", "华宇", "远航", "吉祥", "兴旺", "金桥", "宇辉", "畅通",
    "捷安", "众联", "天成", "瑞丰", "长盛", "海川", "东方",
];

pub(crate) fn industries(category: Category) -> &'static [&'static str] {
    match category {
        Category::Car => &["汽车租赁", "商贸", "科技", "网约车服务", "建设工程"],
        Category::Truck => &["物流", "运输", "货运", "供应链", "冷链物流", "危险货物运输"],
        Category::Bus => &["客运", "公共交通", "旅游客运", "交通运输"],
    }
}

/// Picks an item by weight. Every table here is a non-empty constant.
pub(crate) fn pick_weighted<'a, T>(rng: &mut impl Rng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut point = rng.random_range(0..total.max(1));
    for item in items {
        let w = weight(item);
        if point < w {
            return item;
        }
        point -= w;
    }
    // Unreachable: `point < total`. Indexing is safe as every table is non-empty.
    &items[items.len() - 1]
}

/// Picks an item uniformly; `items` is a non-empty constant table.
pub(crate) fn pick<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Picks a word uniformly; `words` is a non-empty constant table.
pub(crate) fn pick_str(rng: &mut impl Rng, words: &[&'static str]) -> &'static str {
    words[rng.random_range(0..words.len())]
}
