//! The realistic message generator ([`MessageGen`]) behind the `catch-up`
//! corpus and the writers of the live scenarios (what it makes is described
//! in `corpus.rs`'s module doc), in a file of its own so that
//! `benches/encode.rs` can include it to encode and compress the same kind
//! of messages.

use std::fmt::Write as _;

/// Realistic log messages from a seeded RNG.
///
/// Real logs come from a finite set of log statements, each a template
/// whose variable parts (ids, numbers, addresses, durations, names) change
/// from line to line, and a few statements write most of the lines. So the
/// generator builds 3,000 templates once (from a fixed seed, shared by all
/// files): half short (20–300 bytes), half long (0.5–2 KB), of the kinds
/// listed in the module doc, from a 30,000-word pseudo-vocabulary; a
/// message picks a pool (45 % long), then a template with a Zipf-like skew
/// (rank `⌊N^u⌋`), and fills its slots with fresh random values.
pub struct MessageGen {
    pub rng: fastrand::Rng,
    vocabulary: Vec<String>,
    short: Vec<Template>,
    long: Vec<Template>,
}

/// A log statement: literal text and slots.
struct Template {
    pieces: Vec<Piece>,
}

enum Piece {
    Text(String),
    Slot(Slot),
}

/// The variable parts of a log line.
#[derive(Clone, Copy)]
enum Slot {
    Number,
    Hex(usize),
    Uuid,
    Ip,
    Millis,
    Word,
    Path,
    Time,
}

impl Slot {
    /// About how many bytes it fills.
    fn len(self) -> usize {
        match self {
            Slot::Number => 4,
            Slot::Hex(n) => n,
            Slot::Uuid => 36,
            Slot::Ip => 18,
            Slot::Millis => 5,
            Slot::Word => 6,
            Slot::Path => 24,
            Slot::Time => 24,
        }
    }
}

/// Short and long templates, per generator (per file or writer).
const SHORT_TEMPLATES: usize = 60;
const LONG_TEMPLATES: usize = 20;

const LEVELS: [&str; 5] = ["INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const NON_ASCII: [&str; 12] = [
    "Grüße",
    "naïve",
    "café",
    "Ångström",
    "Zürich",
    "señor",
    "日本語",
    "東京",
    "Привет",
    "ошибка",
    "🚀",
    "✓",
];
const OTHER_SCRIPTS: [&str; 4] = [
    "ユーザー認証に失敗しました。再試行しています",
    "Не удалось подключиться к базе данных, повтор через",
    "请求处理完成，耗时",
    "Η σύνδεση έκλεισε από τον απομακρυσμένο κόμβο",
];

impl MessageGen {
    /// A generator whose vocabulary and templates depend only on a fixed
    /// seed (shared by every file) and whose choices depend on `seed`.
    pub fn new(seed: u64) -> MessageGen {
        let mut builder = TemplateBuilder {
            rng: fastrand::Rng::with_seed(seed ^ 0x006c_6f67_7368_6970),
            vocabulary: vocabulary(),
        };
        let short = (0..SHORT_TEMPLATES)
            .map(|_| {
                let len = builder.rng.usize(20..=300);
                builder.template(len)
            })
            .collect();
        let long = (0..LONG_TEMPLATES)
            .map(|_| {
                let len = builder.rng.usize(512..=2048);
                builder.template(len)
            })
            .collect();
        MessageGen {
            rng: fastrand::Rng::with_seed(seed),
            vocabulary: builder.vocabulary,
            short,
            long,
        }
    }

    /// Appends a message from the realistic mix to `out` (never a `\n`).
    pub fn message(&mut self, out: &mut String) {
        let long = self.rng.u8(..100) < 45;
        let pool = if long { &self.long } else { &self.short };
        let template = &pool[zipf_rank(&mut self.rng, pool.len())];
        fill(template, &mut self.rng, &self.vocabulary, out);
    }

    /// Appends a short message, at most about `max` bytes, to `out`.
    pub fn short_message(&mut self, out: &mut String, max: usize) {
        for _ in 0..100 {
            let template = &self.short[zipf_rank(&mut self.rng, self.short.len())];
            if template.estimated_len() <= max {
                fill(template, &mut self.rng, &self.vocabulary, out);
                return;
            }
        }
        out.push_str("short message");
    }

    /// Where to cut `message` into CRI `P` parts: long messages are cut
    /// into 2–4 parts often enough that ~11 % of the CRI lines are `P`
    /// parts; others are not cut. Cuts are at char boundaries.
    pub fn cut_points(&mut self, message: &str) -> Vec<usize> {
        if message.len() < 512 || self.rng.u8(..100) >= 14 {
            return Vec::new();
        }
        let parts = 2 + self.rng.usize(..3);
        let mut cuts: Vec<usize> = (1..parts)
            .map(|_| {
                let mut cut = self.rng.usize(1..message.len());
                while !message.is_char_boundary(cut) {
                    cut += 1;
                }
                cut
            })
            .filter(|&cut| cut < message.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }
}

impl Template {
    fn estimated_len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Slot(s) => s.len(),
            })
            .sum()
    }
}

/// Log-uniform ranks: a heavy head and a long tail.
fn zipf_rank(rng: &mut fastrand::Rng, n: usize) -> usize {
    ((n as f64).powf(rng.f64()) as usize)
        .saturating_sub(1)
        .min(n - 1)
}

fn fill(template: &Template, rng: &mut fastrand::Rng, vocabulary: &[String], out: &mut String) {
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Slot(slot) => fill_slot(*slot, rng, vocabulary, out),
        }
    }
}

fn fill_slot(slot: Slot, rng: &mut fastrand::Rng, vocabulary: &[String], out: &mut String) {
    match slot {
        Slot::Number => write!(out, "{}", zipf_rank(rng, 10_000)).expect("write"),
        Slot::Hex(n) => hex(rng, out, n),
        Slot::Uuid => {
            for (i, n) in [8, 4, 4, 4, 12].into_iter().enumerate() {
                if i > 0 {
                    out.push('-');
                }
                hex(rng, out, n);
            }
        }
        Slot::Ip => write!(
            out,
            "10.{}.{}.{}:{}",
            rng.u8(..),
            rng.u8(..),
            rng.u8(..),
            rng.u16(1024..)
        )
        .expect("write"),
        Slot::Millis => write!(out, "{}ms", zipf_rank(rng, 5000)).expect("write"),
        Slot::Word => out.push_str(&vocabulary[zipf_rank(rng, vocabulary.len())]),
        Slot::Path => write!(
            out,
            "/api/v{}/{}/{}",
            1 + rng.u8(..3),
            vocabulary[zipf_rank(rng, vocabulary.len())],
            rng.u32(..100_000)
        )
        .expect("write"),
        Slot::Time => write!(
            out,
            "2026-11-26T{:02}:{:02}:{:02}.{:03}Z",
            rng.u8(..24),
            rng.u8(..60),
            rng.u8(..60),
            rng.u16(..1000)
        )
        .expect("write"),
    }
}

fn hex(rng: &mut fastrand::Rng, out: &mut String, len: usize) {
    for _ in 0..len {
        out.push(char::from(b"0123456789abcdef"[rng.usize(..16)]));
    }
}

/// 30,000 pseudo-words, the most common first.
fn vocabulary() -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(0x0076_6f63_6162);
    const ONSETS: [&str; 30] = [
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
        "br", "ch", "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "st", "tr",
    ];
    const VOWELS: [&str; 10] = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"];
    const CODAS: [&str; 13] = [
        "", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck",
    ];
    const COMMON: [&str; 40] = [
        "request",
        "completed",
        "failed",
        "user",
        "error",
        "connection",
        "timeout",
        "retry",
        "cache",
        "miss",
        "hit",
        "upstream",
        "service",
        "handler",
        "started",
        "stopped",
        "received",
        "sent",
        "response",
        "status",
        "order",
        "payment",
        "session",
        "token",
        "expired",
        "invalid",
        "query",
        "database",
        "latency",
        "queue",
        "message",
        "worker",
        "job",
        "scheduled",
        "processing",
        "done",
        "from",
        "to",
        "with",
        "the",
    ];
    let mut vocabulary: Vec<String> = COMMON.iter().map(|w| w.to_string()).collect();
    while vocabulary.len() < 30_000 {
        let mut word = String::new();
        for _ in 0..1 + rng.usize(..3) + usize::from(rng.u8(..4) == 0) {
            word.push_str(ONSETS[rng.usize(..ONSETS.len())]);
            word.push_str(VOWELS[rng.usize(..VOWELS.len())]);
            word.push_str(CODAS[rng.usize(..CODAS.len())]);
        }
        if rng.u8(..10) == 0 {
            word[..1].make_ascii_uppercase();
        }
        vocabulary.push(word);
    }
    vocabulary
}

/// Makes templates of the kinds in the module doc.
struct TemplateBuilder {
    rng: fastrand::Rng,
    vocabulary: Vec<String>,
}

/// Pieces being assembled, with their estimated length.
#[derive(Default)]
struct Pieces {
    pieces: Vec<Piece>,
    len: usize,
}

impl Pieces {
    fn text(&mut self, text: &str) {
        self.len += text.len();
        if let Some(Piece::Text(last)) = self.pieces.last_mut() {
            last.push_str(text);
        } else {
            self.pieces.push(Piece::Text(text.to_string()));
        }
    }

    fn slot(&mut self, slot: Slot) {
        self.len += slot.len();
        self.pieces.push(Piece::Slot(slot));
    }
}

impl TemplateBuilder {
    fn word(&mut self) -> String {
        self.vocabulary[zipf_rank(&mut self.rng, self.vocabulary.len())].clone()
    }

    fn template(&mut self, len: usize) -> Template {
        let mut p = Pieces::default();
        let non_ascii = self.rng.u8(..100) < 6;
        match self.rng.u8(..100) {
            0..20 => self.json(&mut p, len),
            20..30 if len < 400 => self.access(&mut p, len),
            30..40 if len < 200 => self.frame(&mut p),
            40..45 => {
                let colour = 31 + self.rng.u8(..6);
                let level = LEVELS[self.rng.usize(..LEVELS.len())];
                let logger = self.word();
                p.text(&format!(
                    "\u{1b}[{colour}m{level}\u{1b}[0m \u{1b}[2m{logger}\u{1b}[0m "
                ));
                self.words(&mut p, len, true, non_ascii);
            }
            45..47 => {
                p.text(OTHER_SCRIPTS[self.rng.usize(..OTHER_SCRIPTS.len())]);
                p.text(" ");
                self.words(&mut p, len, true, true);
            }
            _ => {
                let level = LEVELS[self.rng.usize(..LEVELS.len())];
                let (thread, logger) = (self.word(), self.word());
                p.text(&format!("{level} [{thread}-"));
                p.slot(Slot::Number);
                p.text(&format!("] {logger}: "));
                self.words(&mut p, len, true, non_ascii);
            }
        }
        Template { pieces: p.pieces }
    }

    /// Words and slots until `len`; with `escapes`, also quoted phrases,
    /// tabs, Windows paths and regexes now and then.
    fn words(&mut self, p: &mut Pieces, len: usize, escapes: bool, non_ascii: bool) {
        let mut first = true;
        while p.len < len {
            if !first {
                p.text(" ");
            }
            first = false;
            let roll = self.rng.u16(..1000);
            match roll {
                0..60 => p.slot(Slot::Number),
                60..66 => p.slot(Slot::Hex(8 + self.rng.usize(..9))),
                66..70 => p.slot(Slot::Uuid),
                70..80 => p.slot(Slot::Ip),
                80..100 => p.slot(Slot::Millis),
                100..130 => {
                    let key = self.word();
                    p.text(&format!("{key}="));
                    p.slot(Slot::Word);
                }
                130..140 => p.slot(Slot::Path),
                140..180 => p.slot(Slot::Word),
                180..210 if escapes => {
                    let (a, b) = (self.word(), self.word());
                    p.text(&format!("{a}=\"{b} "));
                    p.slot(Slot::Word);
                    p.text("\"");
                }
                210..214 if escapes => {
                    let (a, b) = (self.word(), self.word());
                    p.text(&format!("C:\\Program Files\\{a}\\{b}.dll"));
                }
                214..216 if escapes => p.text(r"^\d+\.\w*$"),
                216..232 if escapes => p.text("\t"),
                232..242 if non_ascii => p.text(NON_ASCII[self.rng.usize(..NON_ASCII.len())]),
                _ => {
                    let word = self.word();
                    p.text(&word);
                }
            }
        }
    }

    /// `{"level":…,"ts":…,"logger":…,"msg":"…","trace_id":…,…}`.
    fn json(&mut self, p: &mut Pieces, len: usize) {
        let level = LEVELS[self.rng.usize(..LEVELS.len())].to_ascii_lowercase();
        let (a, b) = (self.word(), self.word());
        p.text(&format!(r#"{{"level":"{level}","ts":""#));
        p.slot(Slot::Time);
        p.text(&format!(r#"","logger":"{a}.{b}","msg":""#));
        let msg_end = p.len + 20 + len.saturating_sub(p.len) * 2 / 3;
        self.words(p, msg_end.min(len), false, false);
        p.text(r#"","trace_id":""#);
        p.slot(Slot::Hex(32));
        p.text("\"");
        while p.len + 20 < len {
            let key = self.word();
            match self.rng.u8(..3) {
                0 => {
                    p.text(&format!(r#","{key}":"#));
                    p.slot(Slot::Number);
                }
                1 => {
                    p.text(&format!(r#","{key}":""#));
                    p.slot(Slot::Word);
                    p.text("\"");
                }
                _ => {
                    p.text(&format!(r#","{key}":""#));
                    let end = p.len + 20 + self.rng.usize(..80);
                    self.words(p, end.min(len), false, false);
                    p.text("\"");
                }
            }
        }
        p.text("}");
    }

    /// `10.0.3.7 - - [26/Nov/2026:01:02:03 +0000] "GET /api/… HTTP/1.1" 200 …`
    fn access(&mut self, p: &mut Pieces, len: usize) {
        const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
        const CODES: [u16; 6] = [200, 200, 200, 201, 404, 503];
        let method = METHODS[self.rng.usize(..METHODS.len())];
        let code = CODES[self.rng.usize(..CODES.len())];
        let agent = self.word();
        p.slot(Slot::Ip);
        p.text(" - - [26/Nov/2026:01:");
        p.slot(Slot::Number);
        p.text(&format!(" +0000] \"{method} "));
        p.slot(Slot::Path);
        p.text(&format!(" HTTP/1.1\" {code} "));
        p.slot(Slot::Number);
        p.text(&format!(
            " \"-\" \"Mozilla/5.0 (X11; Linux x86_64) {agent}/{}.0\" ",
            self.rng.u8(..120)
        ));
        p.slot(Slot::Millis);
        if p.len < len {
            p.text(" ");
            self.words(p, len, false, false);
        }
    }

    /// A Java stack frame: `\tat com.word.Word.method(Word.java:123)`.
    fn frame(&mut self, p: &mut Pieces) {
        let (a, b, c) = (self.word(), self.word(), self.word());
        p.text(&format!(
            "\tat com.{a}.{b}.{c}({b}.java:{})",
            self.rng.u16(1..2000)
        ));
    }
}
