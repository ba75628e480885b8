//! The hot part of the JSON codecs: a numeric `data` array read straight into its raw
//! little-endian tensor, and a raw tensor written back as a JSON array, with no JSON
//! tree, no element list and no allocation per element.
//!
//! Reading follows JSON's number grammar exactly and rounds each FP32 and FP64 number
//! once, correctly, from its decimal text: short decimals (at most 19 digits and a small
//! power of ten) by exact float arithmetic (Clinger's fast path), or for FP32 by one
//! `f64` operation whose rounding to `f32` is provably the exact one; every other
//! spelling by the standard library's correctly rounded parser. FP32 is not read through
//! `f64` (which would round twice); FP16 and BF16 are, as before. A number that rounds
//! to infinity in its datatype is out of its range and refused.
//!
//! Digits are read eight bytes at a time. KServe FP32 data, the common case, is read by
//! a loop of its own (`plain_f32`) with the same reader and rounding; at anything it does
//! not read it stops at that element, and the general scanner goes on from there. In
//! both, FP32 numbers that follow one another are read from a fixed window at each one's
//! start (`number_run`), and no branch depends on a number's sign (random in a tensor,
//! and a mispredicted branch costs more than the instructions saved).
//!
//! Integers keep the meaning they had when serde_json read them: an integer spelling is
//! exact; a float spelling (`1.0`, `1e2`) is taken when its value is a whole number;
//! `true` and `false` are 1 and 0. A BOOL is `true`, `false`, `0` or `1`.
//!
//! Writing gives the same text serde_json gave: the shortest round-tripping spelling of
//! each float (zmij), integers in decimal (itoa), `null` for NaN and infinities (JSON
//! has no spelling for them).

use warden_shared::datatype::DataType;

/// One element of a `data` array, as read.
enum Elem<'a> {
    Bool(bool),
    Num(Number<'a>),
    /// A string, `null` or an object: never a number.
    Other,
}

/// One JSON number: its text and, when it has at most 19 digits, its exact decimal value.
struct Number<'a> {
    text: &'a [u8],
    neg: bool,
    /// All its digits as one integer, when there are at most 19 (so it is exact).
    mantissa: Option<u64>,
    /// The power of ten `mantissa` is scaled by.
    exp10: i64,
    /// Spelled with a fraction or an exponent (a float to serde_json).
    float: bool,
}

/// `10^i`, exact in `f64` for `i <= 22`. A `static`, not a `const`: a `const` array
/// indexed at run time is copied onto the stack at each use (184 bytes per number).
static POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
/// `10^i`, exact in `f32` for `i <= 10`.
static POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

impl Number<'_> {
    /// The value rounded once to `f64`.
    fn f64(&self) -> Option<f64> {
        if let Some(m) = self.mantissa
            && m <= 1 << 53
            && self.exp10.unsigned_abs() <= 22
        {
            let p = POW10_F64[self.exp10.unsigned_abs() as usize];
            let v = if self.exp10 < 0 {
                m as f64 / p
            } else {
                m as f64 * p
            };
            return Some(with_sign_f64(self.neg, v));
        }
        std::str::from_utf8(self.text).ok()?.parse().ok()
    }

    /// The value rounded once to `f32`.
    #[inline(always)]
    fn f32(&self) -> Option<f32> {
        self.mantissa
            .and_then(|m| f32_short(self.neg, m, self.exp10))
            .or_else(|| std::str::from_utf8(self.text).ok()?.parse().ok())
    }

    /// The value as an integer, when it is a whole number (see the module's doc).
    fn integer(&self) -> Option<i128> {
        if self.float {
            let f = self.f64()?;
            return (f.fract() == 0.0 && f.is_finite()).then_some(f as i128);
        }
        match self.mantissa {
            Some(m) => Some(if self.neg {
                -i128::from(m)
            } else {
                i128::from(m)
            }),
            // 20 digits or more: beyond every integer datatype but UINT64's top end.
            None => std::str::from_utf8(self.text).ok()?.parse().ok(),
        }
    }
}

/// `m * 10^exp10` (negated when `neg`) rounded once to `f32`, for the exactly known
/// digits of a number of at most 19 of them; none when that takes the exact parser.
#[inline(always)]
fn f32_short(neg: bool, m: u64, exp10: i64) -> Option<f32> {
    if m <= 1 << 24 && exp10.unsigned_abs() <= 10 {
        let p = POW10_F32[exp10.unsigned_abs() as usize];
        let v = if exp10 < 0 {
            m as f32 / p
        } else {
            m as f32 * p
        };
        return Some(with_sign(neg, v));
    }
    if exp10.unsigned_abs() <= 22 {
        // One f64 operation on an exact power of ten and the digits rounded to f64:
        // within two f64 ulps of the exact value, so rounding it to f32 rounds the exact
        // value too unless it lies that close to halfway between two f32s (its low 29
        // bits near 1 << 28), or outside f32's normal range. Those few go to the exact
        // parser.
        let p = POW10_F64[exp10.unsigned_abs() as usize];
        let v = if exp10 < 0 {
            m as f64 / p
        } else {
            m as f64 * p
        };
        let low = v.to_bits() & ((1 << 29) - 1);
        if low.abs_diff(1 << 28) > 8
            && v >= f64::from(f32::MIN_POSITIVE)
            && v <= f64::from(f32::MAX)
        {
            let v = v as f32;
            return Some(with_sign(neg, v));
        }
    }
    None
}

/// `v` (not negative: a magnitude) negated when `neg`, without a branch: signs in a
/// tensor are as good as random, and a branch on them was mispredicted about every
/// other number (callgrind's branch simulation: 24,447 of the BlazeFace body's 49,152).
#[inline(always)]
fn with_sign(neg: bool, v: f32) -> f32 {
    f32::from_bits(v.to_bits() | u32::from(neg) << 31)
}

/// [`with_sign`] for `f64`.
#[inline(always)]
fn with_sign_f64(neg: bool, v: f64) -> f64 {
    f64::from_bits(v.to_bits() | u64::from(neg) << 63)
}

fn not_number(i: usize) -> String {
    format!("element {i} is not a number")
}

fn out_of_range(i: usize, dtype: DataType) -> String {
    format!("element {i} is out of range for {dtype}")
}

/// A finite float, or the refusal of element `i`.
fn finite<F: Into<f64> + Copy>(v: Option<F>, i: usize, dtype: DataType) -> Result<F, String> {
    match v {
        Some(v) if v.into().is_finite() => Ok(v),
        Some(_) => Err(out_of_range(i, dtype)),
        None => Err(not_number(i)),
    }
}

fn elem_f64(e: &Elem<'_>, i: usize, dtype: DataType) -> Result<f64, String> {
    match e {
        Elem::Num(n) => finite(n.f64(), i, dtype),
        _ => Err(not_number(i)),
    }
}

fn elem_integer<T: TryFrom<i128>>(e: &Elem<'_>, i: usize, dtype: DataType) -> Result<T, String> {
    let v = match e {
        Elem::Num(n) => n.integer(),
        Elem::Bool(b) => Some(i128::from(*b)),
        Elem::Other => None,
    };
    v.and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("element {i} is not a valid {dtype}"))
}

/// Reads `text`, a JSON array of numbers or booleans (flat, or nested at most
/// `max_depth` arrays deep), into `out` as raw little-endian elements of `dtype`, a
/// datatype of fixed size. Refuses more than `max` elements before writing them, so
/// `out` grows by at most `max` elements. Returns how many were written.
pub(crate) fn read_numeric(
    text: &[u8],
    dtype: DataType,
    max_depth: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<usize, String> {
    let mut from = Resume::default();
    if dtype == DataType::F32 {
        let start = out.len();
        match plain_f32(text, max_depth, max, out) {
            Ok(n) => return Ok(n),
            // The general scanner goes on from the element the loop could not read,
            // with what the loop wrote before it kept.
            Err(at) => {
                out.truncate(start + at.count * 4);
                from = at;
            }
        }
    }
    read_tracked(text, dtype, max_depth, max, out, &mut (), from)
}

/// Where a scan of a `data` array starts: at its beginning, or at the start of an
/// element of the outermost array or one nested in it, with `depth` arrays open and
/// `count` elements read before it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Resume {
    pos: usize,
    depth: usize,
    count: usize,
}

/// The common FP32 `data`, read by a loop of its own: an array of plain numbers
/// (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, at most 19 digits before the
/// exponent, whose value [`f32_short`] rounds), flat or nested (at most `max_depth`
/// deep; KServe data has its shape given, so the nesting only has to be JSON), spaced or
/// not. At anything else (a number it does not round, an empty array, a refusal of any
/// kind) it stops and says where: at the start of the element it could not read, all
/// before it read and written. The general scanner goes on from there and reads the
/// rest, or words the refusal, as it would have had it read the whole array: the values
/// are those it reads, by the same digit reader and the same rounding.
#[inline(never)]
fn plain_f32(
    text: &[u8],
    max_depth: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<usize, Resume> {
    let ws = |p: &mut usize| {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = text.get(*p) {
            *p += 1;
        }
    };
    let mut p = 0;
    let mut depth = 0usize;
    let mut count = 0usize;
    loop {
        // Where the general scanner goes on from if this element is not read here: its
        // start after a `,` (or the text's), else the `[` that opens the array it is in
        // (after a `[`, the general scanner reads `]` as an empty array's end).
        let mut here = Resume {
            pos: p,
            depth,
            count,
        };
        ws(&mut p);
        // Arrays that open before the value.
        while text.get(p) == Some(&b'[') {
            here = Resume {
                pos: p,
                depth,
                count,
            };
            depth += 1;
            if depth > max_depth {
                return Err(here);
            }
            p += 1;
            ws(&mut p);
        }
        if depth == 0 {
            return Err(here);
        }
        // Most elements: numbers in the common spelling, one after another.
        let run = number_run(text, p, count, max, out);
        if run.count > count {
            let first_of_run = run.count == count + 1;
            (p, count) = (run.end, run.count);
            match run.last_start {
                // Stopped at the start of an element: the loop goes on from there.
                None => continue,
                // Stopped after a value: what follows it is read below. A refusal
                // there resumes from the value's start (or the `[` before it, as
                // above, when it was the run's first).
                Some(start) if !first_of_run => {
                    here = Resume {
                        pos: start,
                        depth,
                        count: count - 1,
                    }
                }
                Some(_) => {}
            }
        } else {
            let stop = || here;
            let start = p;
            let neg = text.get(p) == Some(&b'-');
            p += usize::from(neg);
            let mut m = 0u64;
            // Significant digits (leading zeros keep `m` exact, so they are not counted).
            let mut n = 0usize;
            match text.get(p).ok_or_else(stop)? {
                // A digit after it is not JSON: what follows the number is checked below.
                b'0' => p += 1,
                b'1'..=b'9' => n += digits(text, &mut p, &mut m),
                _ => return Err(here),
            }
            let mut exp10 = 0i64;
            if text.get(p) == Some(&b'.') {
                p += 1;
                let from = p;
                if m == 0 {
                    while text.get(p) == Some(&b'0') {
                        p += 1;
                    }
                }
                n += digits(text, &mut p, &mut m);
                if p == from {
                    return Err(here);
                }
                exp10 = -((p - from) as i64);
            }
            // Exponents of more than 4 digits are left to the exact parser below.
            let mut short = n <= 19;
            if let Some(b'e' | b'E') = text.get(p) {
                p += 1;
                let eneg = text.get(p) == Some(&b'-');
                p += usize::from(matches!(text.get(p), Some(b'-' | b'+')));
                let mut e = 0u64;
                let k = digits(text, &mut p, &mut e);
                if k == 0 {
                    return Err(here);
                }
                // `e` is exact (and small) only then: a longer exponent wraps.
                if k <= 4 {
                    exp10 += if eneg { -(e as i64) } else { e as i64 };
                } else {
                    short = false;
                }
            }
            if count >= max {
                return Err(here);
            }
            let v = match short.then(|| f32_short(neg, m, exp10)).flatten() {
                Some(v) => v,
                // Too many digits for the short path, or too near a halfway point: the
                // general scanner's own reader and rounding, for this number alone.
                None => number_f32(text, start, p).ok_or_else(stop)?,
            };
            out.extend_from_slice(&v.to_le_bytes());
            count += 1;
        }
        let stop = || here;
        ws(&mut p);
        match text.get(p).ok_or_else(stop)? {
            b',' => p += 1,
            // Arrays that close after the value, then `,` or the end.
            b']' => loop {
                p += 1;
                depth -= 1;
                ws(&mut p);
                if depth == 0 {
                    return if p == text.len() {
                        Ok(count)
                    } else {
                        Err(here)
                    };
                }
                match text.get(p).ok_or_else(stop)? {
                    b']' => {}
                    b',' => {
                        p += 1;
                        break;
                    }
                    _ => return Err(here),
                }
            },
            _ => return Err(here),
        }
    }
}

/// How many bytes from an element's start [`window_f32`] reads it in.
const WINDOW: usize = 48;

/// Where [`number_run`] stopped.
struct Run {
    /// Where the element it did not read starts, or where what follows its last value.
    end: usize,
    /// The count of elements read, its own included.
    count: usize,
    /// The start of its last value, when it stopped after it (at an array's end, or
    /// at anything but a comma); none when it stopped at an element's start.
    last_start: Option<usize>,
}

/// From `p`, an element's start in an array: the numbers that come one after another,
/// each read by [`window_f32`] (after at most one space) and followed by a comma, up to
/// `max` elements in all. It stops at an element it does not read, or after a value not
/// followed by a comma (the caller reads what follows).
#[inline(always)]
fn number_run(text: &[u8], mut p: usize, mut count: usize, max: usize, out: &mut Vec<u8>) -> Run {
    while count < max {
        let Some(w) = text.get(p..p + WINDOW) else {
            break;
        };
        let Ok(w) = <&[u8; WINDOW]>::try_from(w) else {
            break;
        };
        let Some((v, i)) = window_f32(w) else {
            break;
        };
        out.extend_from_slice(&v.to_le_bytes());
        count += 1;
        // `i` is at most 33 (see `window_f32`).
        if w[i] != b',' {
            return Run {
                end: p + i,
                count,
                last_start: Some(p),
            };
        }
        p += i + 1;
    }
    Run {
        end: p,
        count,
        last_start: None,
    }
}

/// The FP32 number at the start of `w` (after at most one space) in the spelling
/// clients send, and where it ends (at most 33); none for anything else, which the
/// caller reads the slow way. The spelling: at most 8 bytes (space, sign, digits) before
/// the point, at most 19 digits in all, at most 3 in the exponent. JSON's grammar is
/// kept: no leading zero before a digit, a digit each side of the point and after `e`;
/// what follows the number is the caller's. Reading from a fixed-size window costs one
/// bounds check per element, not one per byte.
#[inline(always)]
fn window_f32(w: &[u8; WINDOW]) -> Option<(f32, usize)> {
    let run = |i: usize| -> Option<(u64, usize)> {
        let b: [u8; 8] = w.get(i..i + 8)?.try_into().ok()?;
        run8(u64::from_le_bytes(b))
    };
    let mut i = usize::from(w[0] == b' ');
    let neg = w[i] == b'-';
    i += usize::from(neg);
    let first = w[i].wrapping_sub(b'0');
    if first > 9 {
        return None;
    }
    let mut m = u64::from(first);
    i += 1;
    // Whole digits one at a time: usually one. `0` is followed by no digit.
    let mut digits = usize::from(first != 0);
    while let d @ 0..=9 = w[i].wrapping_sub(b'0') {
        if first == 0 || i > 7 {
            return None;
        }
        m = m * 10 + u64::from(d);
        digits += 1;
        i += 1;
    }
    // Here `i` is at most 8.
    let mut exp10 = 0i64;
    if w[i] == b'.' {
        let (f, k) = run(i + 1)?;
        if k == 0 {
            return None;
        }
        m = m * POW10_U64[k] + f;
        let mut frac = k;
        // Up to three runs of eight: numpy's float32 `tolist()` gives 17 or so.
        let mut k = k;
        while k == 8 {
            if frac == 24 {
                return None;
            }
            let f;
            (f, k) = run(i + 1 + frac)?;
            m = m.wrapping_mul(POW10_U64[k]).wrapping_add(f);
            frac += k;
        }
        // Leading zeros of the fraction are counted too: at worst a rare number
        // goes the slow way.
        digits += frac;
        if digits > 19 {
            return None;
        }
        i += 1 + frac;
        exp10 = -(frac as i64);
    }
    // Here `i` is at most 28 (19 digits at most, 8 bytes before the point).
    if w[i] | 0x20 == b'e' {
        i += 1;
        let eneg = w[i] == b'-';
        i += usize::from(eneg || w[i] == b'+');
        let (e, k) = run(i)?;
        if k == 0 || k > 3 {
            return None;
        }
        i += k;
        exp10 += if eneg { -(e as i64) } else { e as i64 };
    }
    Some((f32_short(neg, m, exp10)?, i))
}

/// The number at `start`, which ends at `end`, read and rounded to `f32` by the general
/// scanner; none when it is not finite in FP32 (the general scanner words the refusal).
/// Out of line: rare, and inlined it crowds the loop's registers.
#[cold]
#[inline(never)]
fn number_f32(text: &[u8], start: usize, end: usize) -> Option<f32> {
    let mut general = Scanner { text, pos: start };
    let v = general.number().ok()?.f32()?;
    (v.is_finite() && general.pos == end).then_some(v)
}

/// [`read_numeric`] for data that carries no shape (TensorFlow Serving's JSON): also
/// returns the shape the nesting gives, and refuses an array that is not regular
/// (rectangular, with every number at the same depth).
pub(crate) fn read_numeric_shaped(
    text: &[u8],
    dtype: DataType,
    max_depth: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(usize, Vec<i64>), String> {
    let mut shape = Shape::default();
    let n = read_tracked(
        text,
        dtype,
        max_depth,
        max,
        out,
        &mut shape,
        Resume::default(),
    )?;
    Ok((n, shape.dims()))
}

/// What a scan notes of the nesting as it goes: nothing for KServe data, whose shape is
/// given; the shape for TFS data, whose shape is the nesting.
trait Nesting {
    /// An array opens; `depth` counts it (the outermost is 1).
    fn open(&mut self, depth: usize) -> Result<(), String>;
    /// A scalar at `depth` (the depth of the array holding it).
    fn scalar(&mut self, depth: usize) -> Result<(), String>;
    /// `n` scalars at `depth`, one after another.
    fn scalars(&mut self, depth: usize, n: usize) -> Result<(), String> {
        (0..n).try_for_each(|_| self.scalar(depth))
    }
    /// The array at `depth` closes.
    fn close(&mut self, depth: usize) -> Result<(), String>;
}

impl Nesting for () {
    fn open(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }
    fn scalar(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }
    fn close(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }
}

/// The shape of a nested array, checked regular as it is read.
#[derive(Default)]
struct Shape {
    /// The length every array at depth `i + 1` has, once one has closed.
    lens: Vec<Option<usize>>,
    /// Elements so far of each open array, outermost first.
    open: Vec<usize>,
    /// The deepest array opened so far.
    deepest: usize,
    /// The depth of the scalars, once one is read.
    leaf: Option<usize>,
}

fn irregular() -> String {
    "the data is not a regular (rectangular) array".into()
}

impl Shape {
    fn dims(&self) -> Vec<i64> {
        self.lens.iter().map(|l| l.unwrap_or(0) as i64).collect()
    }

    /// `k` more elements in the array at `depth` (`depth` 0: the top level itself).
    fn count(&mut self, depth: usize, k: usize) {
        if let Some(n) = depth.checked_sub(1).and_then(|d| self.open.get_mut(d)) {
            *n += k;
        }
    }
}

impl Nesting for Shape {
    fn open(&mut self, depth: usize) -> Result<(), String> {
        // An array where scalars are: `[1, [2]]`.
        if self.leaf.is_some_and(|leaf| depth > leaf) {
            return Err(irregular());
        }
        self.count(depth - 1, 1);
        self.open.push(0);
        self.deepest = self.deepest.max(depth);
        if self.lens.len() < depth {
            self.lens.push(None);
        }
        Ok(())
    }

    fn scalar(&mut self, depth: usize) -> Result<(), String> {
        self.scalars(depth, 1)
    }

    fn scalars(&mut self, depth: usize, n: usize) -> Result<(), String> {
        // Every scalar at the one depth, and no array below it: `[[1], 2]`, `[[], 1]`.
        match self.leaf {
            None if depth == self.deepest => self.leaf = Some(depth),
            Some(leaf) if leaf == depth => {}
            _ => return Err(irregular()),
        }
        self.count(depth, n);
        Ok(())
    }

    fn close(&mut self, depth: usize) -> Result<(), String> {
        let n = self.open.pop().unwrap_or(0);
        match &mut self.lens[depth - 1] {
            l @ None => *l = Some(n),
            Some(l) if *l == n => {}
            Some(_) => return Err(irregular()),
        }
        Ok(())
    }
}

/// Where the scanner's values go, one at a time ([`Sink::put`]), or for FP32 a run of
/// numbers at once ([`Sink::run`]).
trait Sink<'a> {
    /// Element `i`, read.
    fn put(&mut self, e: Elem<'a>, i: usize) -> Result<(), String>;
    /// The numbers from `p`, an element's start, read as [`number_run`] reads them;
    /// none by default.
    fn run(&mut self, _text: &[u8], p: usize, count: usize, _max: usize) -> Run {
        Run {
            end: p,
            count,
            last_start: None,
        }
    }
}

impl<'a, F: FnMut(Elem<'a>, usize) -> Result<(), String>> Sink<'a> for F {
    #[inline(always)]
    fn put(&mut self, e: Elem<'a>, i: usize) -> Result<(), String> {
        self(e, i)
    }
}

/// FP32 elements, written to the tensor.
struct F32Sink<'o>(&'o mut Vec<u8>);

impl<'a> Sink<'a> for F32Sink<'_> {
    #[inline(always)]
    fn put(&mut self, e: Elem<'a>, i: usize) -> Result<(), String> {
        let v = match &e {
            Elem::Num(n) => finite(n.f32(), i, DataType::F32)?,
            _ => return Err(not_number(i)),
        };
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    #[inline(always)]
    fn run(&mut self, text: &[u8], p: usize, count: usize, max: usize) -> Run {
        number_run(text, p, count, max, self.0)
    }
}

fn read_tracked(
    text: &[u8],
    dtype: DataType,
    max_depth: usize,
    max: usize,
    out: &mut Vec<u8>,
    nesting: &mut impl Nesting,
    from: Resume,
) -> Result<usize, String> {
    let mut s = Scanner {
        text,
        pos: from.pos,
    };
    macro_rules! scan {
        (|$e:ident, $i:ident| $bytes:expr) => {
            s.scan(from, max_depth, max, nesting, |$e, $i| {
                out.extend_from_slice(&$bytes);
                Ok(())
            })
        };
    }
    macro_rules! int {
        ($t:ty) => {
            scan!(|e, i| elem_integer::<$t>(&e, i, dtype)?.to_le_bytes())
        };
    }
    match dtype {
        DataType::F32 => s.scan(from, max_depth, max, nesting, F32Sink(out)),
        DataType::F64 => scan!(|e, i| elem_f64(&e, i, dtype)?.to_le_bytes()),
        DataType::F16 => scan!(|e, i| {
            let h = half::f16::from_f64(elem_f64(&e, i, dtype)?);
            finite(Some(h.to_f32()), i, dtype)?;
            h.to_le_bytes()
        }),
        DataType::Bf16 => scan!(|e, i| {
            let h = half::bf16::from_f64(elem_f64(&e, i, dtype)?);
            finite(Some(h.to_f32()), i, dtype)?;
            h.to_le_bytes()
        }),
        DataType::Bool => scan!(|e, i| match e {
            Elem::Bool(b) => [u8::from(b)],
            Elem::Num(Number {
                neg: false,
                float: false,
                mantissa: Some(m @ (0 | 1)),
                ..
            }) => [m as u8],
            _ => return Err(format!("element {i} is not a BOOL")),
        }),
        DataType::U8 => int!(u8),
        DataType::I8 => int!(i8),
        DataType::U16 => int!(u16),
        DataType::I16 => int!(i16),
        DataType::U32 => int!(u32),
        DataType::I32 => int!(i32),
        DataType::U64 => int!(u64),
        DataType::I64 => int!(i64),
        DataType::Bytes => Err("BYTES is not a numeric datatype".into()),
    }
}

/// A cursor over JSON text.
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn syntax(&self, what: &str) -> String {
        format!("data is not valid JSON: {what} at byte {}", self.pos)
    }

    /// Reads one array (nested at most `max_depth` deep), handing each scalar with its
    /// index to `put`, in order; at most `max` of them.
    // Kept out of line: inlined into its callers, it left the per-element copy of
    // `put` as a call (about 14% more instructions per element, gateway/examples/codec_cost.rs).
    #[inline(never)]
    fn scan(
        &mut self,
        from: Resume,
        max_depth: usize,
        max: usize,
        nesting: &mut impl Nesting,
        mut sink: impl Sink<'a>,
    ) -> Result<usize, String> {
        if from.depth == 0 {
            self.skip_ws();
            if self.peek() != Some(b'[') {
                return Err("data must be an array".into());
            }
        }
        let mut depth = from.depth;
        let mut count = from.count;
        loop {
            // A value.
            self.skip_ws();
            let elem = match self.peek() {
                Some(b'[') => {
                    if depth >= max_depth {
                        return Err(format!("data nested deeper than {max_depth} levels"));
                    }
                    depth += 1;
                    nesting.open(depth)?;
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() != Some(b']') {
                        continue;
                    }
                    self.pos += 1;
                    nesting.close(depth)?;
                    depth -= 1;
                    None
                }
                Some(b'-' | b'0'..=b'9') => {
                    // FP32: the numbers that follow one another, read at once (every
                    // one a valid, finite number, followed by a comma but perhaps the
                    // last); the rest, and every refusal, read as below.
                    let run = sink.run(self.text, self.pos, count, max);
                    if run.count > count {
                        nesting.scalars(depth, run.count - count)?;
                        (self.pos, count) = (run.end, run.count);
                        if run.last_start.is_none() {
                            continue;
                        }
                        None
                    } else {
                        Some(Elem::Num(self.number()?))
                    }
                }
                Some(b't') => Some(self.literal(b"true", Elem::Bool(true))?),
                Some(b'f') => Some(self.literal(b"false", Elem::Bool(false))?),
                Some(b'n' | b'"' | b'{') => Some(Elem::Other),
                _ => return Err(self.syntax("expected a value")),
            };
            if let Some(elem) = elem {
                if count >= max {
                    return Err(format!("data has more elements than the shape's {max}"));
                }
                nesting.scalar(depth)?;
                sink.put(elem, count)?;
                count += 1;
            }
            // What follows it: `,` and the next value, or `]` closing arrays. A comma
            // right after the value (the common case) first, straight to the next.
            if depth > 0 && self.peek() == Some(b',') {
                self.pos += 1;
                continue;
            }
            loop {
                if depth == 0 {
                    self.skip_ws();
                    return match self.peek() {
                        None => Ok(count),
                        Some(_) => Err(self.syntax("trailing characters")),
                    };
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b']') => {
                        self.pos += 1;
                        nesting.close(depth)?;
                        depth -= 1;
                    }
                    _ => return Err(self.syntax("expected `,` or `]`")),
                }
            }
        }
    }

    fn literal(&mut self, word: &[u8], e: Elem<'a>) -> Result<Elem<'a>, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(e)
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// One number, by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Result<Number<'a>, String> {
        let s = self.text;
        let start = self.pos;
        let mut p = start;
        let at = |p: usize| s.get(p).copied().unwrap_or(0);
        let neg = at(p) == b'-';
        p += usize::from(neg);
        // Every digit, into one u64: exact while there are at most 19 of them.
        let mut m = 0u64;
        let mut n = 0usize;
        match at(p) {
            b'0' => p += 1,
            b'1'..=b'9' => n += digits(s, &mut p, &mut m),
            _ => return Err(self.syntax("invalid number")),
        }
        let mut exp10 = 0i64;
        let mut float = false;
        if at(p) == b'.' {
            p += 1;
            float = true;
            let f = digits(s, &mut p, &mut m);
            n += f;
            if f == 0 {
                self.pos = p;
                return Err(self.syntax("invalid number"));
            }
            exp10 = -(f as i64);
        }
        if let b'e' | b'E' = at(p) {
            p += 1;
            float = true;
            let eneg = at(p) == b'-';
            p += usize::from(matches!(at(p), b'-' | b'+'));
            let from = p;
            let mut e = 0i64;
            while let d @ b'0'..=b'9' = at(p) {
                // Saturates far beyond any float's range; only the fast path reads it.
                e = (e * 10 + i64::from(d - b'0')).min(1 << 40);
                p += 1;
            }
            if p == from {
                self.pos = p;
                return Err(self.syntax("invalid number"));
            }
            exp10 += if eneg { -e } else { e };
        }
        self.pos = p;
        Ok(Number {
            text: &s[start..p],
            neg,
            mantissa: (n <= 19).then_some(m),
            exp10,
            float,
        })
    }
}

/// Reads the digits at `p` onto `m` (`m` times ten, plus the digit, for each; wrapping
/// past 19 digits), moving `p` past them. Returns how many there were.
#[inline(always)]
fn digits(s: &[u8], p: &mut usize, m: &mut u64) -> usize {
    let from = *p;
    loop {
        match digit_run(s, *p) {
            Some((v, k)) => {
                *m = m.wrapping_mul(POW10_U64[k]).wrapping_add(v);
                *p += k;
                if k < 8 {
                    break;
                }
            }
            // Fewer than eight bytes left: one at a time.
            None => {
                while let Some(&d @ b'0'..=b'9') = s.get(*p) {
                    *m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    *p += 1;
                }
                break;
            }
        }
    }
    *p - from
}

/// `10^i` for `i <= 8`, the factor a run of `i` digits shifts the digits before it by.
static POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The run of digits starting at `p`, up to eight of them, read in one step from the
/// eight bytes at `p` (none when fewer than eight are left): their value and how many
/// there are (fewer than eight: the run ends inside these bytes).
#[inline]
fn digit_run(s: &[u8], p: usize) -> Option<(u64, usize)> {
    run8(u64::from_le_bytes(
        s.get(p..p.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// [`digit_run`] of the eight bytes `w` (little-endian).
#[inline(always)]
fn run8(w: u64) -> Option<(u64, usize)> {
    let digits = w.wrapping_sub(0x3030_3030_3030_3030);
    // A byte's top bit is set here when it is not a digit. A borrow or carry only
    // moves upward, from a byte that is not a digit, so the lowest set bit is exact.
    let not_digit = (w.wrapping_add(0x4646_4646_4646_4646) | digits) & 0x8080_8080_8080_8080;
    let k = (not_digit.trailing_zeros() / 8) as usize;
    // The run's bytes moved to the top; the bytes shifted in are leading zeros. No
    // branch on an empty run (its length follows the data: numpy's 16 to 18 decimals
    // end a third run at random): its shift wraps to 0 and the mask clears it.
    let empty = u64::from(k == 0).wrapping_sub(1);
    let top = (digits << ((64 - 8 * k as u32) & 63)) & empty;
    Some((combine8(top), k))
}

/// The value of eight digit bytes (`0..=9` each, the first the most significant).
#[inline]
fn combine8(digits: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    const MUL1: u64 = 0x000f_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let v = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    u64::from((v1.wrapping_add(v2) >> 32) as u32)
}

/// Appends `raw`, a little-endian tensor of `dtype`, as a flat JSON array.
pub(crate) fn write_array(out: &mut Vec<u8>, dtype: DataType, raw: &[u8]) -> Result<(), String> {
    let Some(size) = dtype.element_size() else {
        let items = crate::front::tensor::split_bytes_elements(raw)?;
        out.push(b'[');
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, &String::from_utf8_lossy(item))
                .map_err(|e| e.to_string())?;
        }
        out.push(b']');
        return Ok(());
    };
    if !raw.len().is_multiple_of(size) {
        return Err("output length is not a whole number of elements".into());
    }
    out.reserve(2 + raw.len() / size * max_text(dtype));
    out.push(b'[');
    if dtype == DataType::F32 {
        // The common output, without the per-element match on the datatype.
        for (k, c) in raw.chunks_exact(4).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            write_float(out, v, v.is_finite());
        }
    } else {
        for (k, c) in raw.chunks_exact(size).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_element(out, dtype, c);
        }
    }
    out.push(b']');
    Ok(())
}

/// A typical longest spelling of one element, to reserve the array's room at once.
fn max_text(dtype: DataType) -> usize {
    match dtype {
        DataType::Bool => 6,
        DataType::U8 | DataType::I8 => 4,
        DataType::U16 | DataType::I16 => 6,
        DataType::U32 | DataType::I32 => 11,
        DataType::U64 | DataType::I64 => 20,
        DataType::F16 | DataType::Bf16 | DataType::F32 => 16,
        DataType::F64 | DataType::Bytes => 25,
    }
}

/// Appends a float: its shortest round-tripping spelling, or `null` when it is not
/// finite (JSON has no spelling for NaN and the infinities).
#[inline]
fn write_float<F: zmij::Float>(out: &mut Vec<u8>, v: F, finite: bool) {
    if finite {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends one element of a fixed-size datatype, `c` being exactly its bytes.
#[inline]
pub(crate) fn write_element(out: &mut Vec<u8>, dtype: DataType, c: &[u8]) {
    fn int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn bytes<const N: usize>(c: &[u8]) -> [u8; N] {
        let mut b = [0; N];
        b.copy_from_slice(c);
        b
    }
    match dtype {
        DataType::Bool => out.extend_from_slice(if c[0] != 0 { b"true" } else { b"false" }),
        DataType::U8 => int(out, c[0]),
        DataType::I8 => int(out, i8::from_le_bytes(bytes(c))),
        DataType::U16 => int(out, u16::from_le_bytes(bytes(c))),
        DataType::I16 => int(out, i16::from_le_bytes(bytes(c))),
        DataType::U32 => int(out, u32::from_le_bytes(bytes(c))),
        DataType::I32 => int(out, i32::from_le_bytes(bytes(c))),
        DataType::U64 => int(out, u64::from_le_bytes(bytes(c))),
        DataType::I64 => int(out, i64::from_le_bytes(bytes(c))),
        DataType::F16 => {
            let v = half::f16::from_le_bytes(bytes(c)).to_f32();
            write_float(out, v, v.is_finite())
        }
        DataType::Bf16 => {
            let v = half::bf16::from_le_bytes(bytes(c)).to_f32();
            write_float(out, v, v.is_finite())
        }
        DataType::F32 => {
            let v = f32::from_le_bytes(bytes(c));
            write_float(out, v, v.is_finite())
        }
        DataType::F64 => {
            let v = f64::from_le_bytes(bytes(c));
            write_float(out, v, v.is_finite())
        }
        DataType::Bytes => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, dtype: DataType) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        read_numeric(text.as_bytes(), dtype, 4, 16, &mut out).map(|_| out)
    }

    #[test]
    fn structure_is_checked() {
        for bad in [
            "",
            "1",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1]]",
            "[[1]",
            "[1] x",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[-]",
            "[NaN]",
            "[Infinity]",
            "[tru]",
            "[[[[[1]]]]]",
            "[null]",
            "[\"1\"]",
            "[{}]",
        ] {
            assert!(read(bad, DataType::F32).is_err(), "{bad:?}");
        }
        assert_eq!(
            read(" [ [1 ,2] ,[ ] , 3 ] ", DataType::U8).unwrap(),
            [1, 2, 3]
        );
        assert_eq!(read("[[[[]]]]", DataType::U8).unwrap(), [0u8; 0]);
        let many = format!("[{}]", ["0"; 17].join(","));
        assert!(read(&many, DataType::U8).is_err(), "more than max");
    }

    /// Data with no shape (TFS): the nesting gives it, and must be regular.
    #[test]
    fn shapes_come_from_the_nesting_and_must_be_regular() {
        // FP32 with room after the text: the numbers are read in runs (`Sink::run`),
        // and the nesting noted for a run at once.
        let pad = " ".repeat(WINDOW);
        for (dtype, pad, size) in [(DataType::U8, "", 1), (DataType::F32, pad.as_str(), 4)] {
            let shaped = |text: &str| {
                let mut out = Vec::new();
                let text = format!("{text}{pad}");
                read_numeric_shaped(text.as_bytes(), dtype, 4, 16, &mut out)
                    .map(|(n, shape)| (n, shape, out))
            };
            for (text, n, shape) in [
                ("[1, 2, 3]", 3, vec![3]),
                ("[[1, 2], [3, 4], [5, 6]]", 6, vec![3, 2]),
                ("[[[1]], [[2]]]", 2, vec![2, 1, 1]),
                ("[]", 0, vec![0]),
                ("[[], []]", 0, vec![2, 0]),
                ("[[[]]]", 0, vec![1, 1, 0]),
                ("[[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]", 10, vec![2, 5]),
            ] {
                let (got, dims, out) = shaped(text).unwrap();
                assert_eq!((got, dims), (n, shape), "{dtype} {text}");
                assert_eq!(out.len(), n * size, "{dtype} {text}");
            }
            for bad in [
                "[[1, 2], [3]]",
                "[[1], 2]",
                "[1, [2]]",
                "[[], 1]",
                "[[1], []]",
                "[[[1]], [2]]",
                "[[1], [[2]]]",
                "[[[1], [2]], [[3]]]",
                "[[1, 2, 3, 4], [5, 6, 7]]",
                "[[1, 2, 3], [4, 5, 6, 7]]",
                "[1, 2, 3, [4]]",
            ] {
                assert!(shaped(bad).is_err(), "{dtype} {bad}");
            }
        }
    }

    #[test]
    fn ranges_and_spellings() {
        assert_eq!(read("[1.0, 1e2, true]", DataType::I8).unwrap(), [1, 100, 1]);
        assert!(read("[1.5]", DataType::I32).is_err());
        assert!(read("[-1]", DataType::U64).is_err());
        assert_eq!(
            read("[18446744073709551615]", DataType::U64).unwrap(),
            u64::MAX.to_le_bytes()
        );
        assert!(read("[18446744073709551616]", DataType::U64).is_err());
        assert_eq!(read("[0, 1, true]", DataType::Bool).unwrap(), [0, 1, 1]);
        assert!(read("[-0]", DataType::Bool).is_err());
        assert!(read("[1.0]", DataType::Bool).is_err());
        assert!(read("[2]", DataType::Bool).is_err());
        assert!(read("[true]", DataType::F32).is_err());
        assert!(read("[1e39]", DataType::F32).is_err(), "rounds to infinity");
        assert!(
            read("[65520]", DataType::F16).is_err(),
            "rounds to infinity"
        );
        assert!(read("[1e400]", DataType::F64).is_err());
        assert_eq!(read("[-0]", DataType::F32).unwrap(), (-0f32).to_le_bytes());
        assert_eq!(read("[1e-400]", DataType::F64).unwrap(), 0f64.to_le_bytes());
        // Correctly rounded once: through f64 this rounds twice, to 1.0000001.
        assert_eq!(
            read("[1.00000005960464477550]", DataType::F32).unwrap(),
            1.0000001f32.to_le_bytes()
        );
    }

    /// The FP32 loop of its own reads plain numbers, and stops at the start of the
    /// element it does not read (the general scanner goes on from there).
    #[test]
    fn fp32_loop_reads_plain_numbers_and_says_where_it_stopped() {
        let fast = |text: &str, depth: usize, max: usize| {
            let mut out = Vec::new();
            plain_f32(text.as_bytes(), depth, max, &mut out).map(|n| (n, out))
        };
        let le = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            fast(
                " [0.5, -1.25,3 ,\n\t-0, 0.123456, 12345678901234567.5, 1.5e-3, 2E+2] ",
                1,
                8
            ),
            Ok((
                8,
                le(&[
                    0.5,
                    -1.25,
                    3.0,
                    -0.0,
                    0.123456,
                    12345678901234567.5,
                    1.5e-3,
                    200.0
                ])
            ))
        );
        assert_eq!(fast("[7]", 1, 1), Ok((1, le(&[7.0]))));
        // Nested, as numpy's `tolist()` gives it, to `max_depth`.
        assert_eq!(
            fast("[[[0.5, 1]], [[-2 ] ,[3.25e0]] ]", 3, 8),
            Ok((4, le(&[0.5, 1.0, -2.0, 3.25])))
        );
        assert_eq!(
            fast("[1, [2, [3]], 4]", 3, 8),
            Ok((4, le(&[1.0, 2.0, 3.0, 4.0])))
        );
        // Exponents past the short path's 4 digits (2^63, which negated overflows an
        // i64; one past u64::MAX): no overflow, the exact reader's answer.
        assert_eq!(
            fast("[1e-9223372036854775808, 2E+18446744073709551616]", 1, 4),
            Err(Resume {
                pos: 24,
                depth: 1,
                count: 1
            })
        );
        // Numbers past the short path: the general scanner's reader, in the loop.
        assert_eq!(
            fast(
                "[1e-50, 0.00000000000000000001, 12345678901234567890, 1.00000005960464477550]",
                1,
                4
            ),
            Ok((4, le(&[0.0, 1e-20, 12345678901234567890.0, 1.0000001])))
        );
        let at = |pos, depth, count| Err(Resume { pos, depth, count });
        let stopped = |text: &str, depth: usize, max: usize| fast(text, depth, max).map(|(n, _)| n);
        // Not an array, or deeper than allowed: from the beginning.
        for text in ["1", "", " {", "\"[1]\""] {
            assert_eq!(stopped(text, 2, 4), at(0, 0, 0), "{text}");
        }
        assert_eq!(stopped("[1]", 0, 4), at(0, 0, 0));
        // At the start of the element it does not read (or at the `[` it is in, when it
        // is the array's first), all before it written.
        for (text, want) in [
            ("[]", at(0, 0, 0)),
            ("[1, []]", at(4, 1, 1)),
            ("[1, [[2]]]", at(5, 2, 1)),
            ("[1,2, true]", at(5, 1, 2)),
            ("[1, null]", at(3, 1, 1)),
            ("[1, \"1\"]", at(3, 1, 1)),
            ("[1, 01]", at(3, 1, 1)),
            ("[1, -01]", at(3, 1, 1)),
            ("[1, 1.]", at(3, 1, 1)),
            ("[1, .5]", at(3, 1, 1)),
            ("[1, +1]", at(3, 1, 1)),
            ("[1, 1e]", at(3, 1, 1)),
            ("[1, 1e+]", at(3, 1, 1)),
            ("[1, 1e12345]", at(3, 1, 1)),
            ("[1, 1e39]", at(3, 1, 1)),
            ("[1, 2, 3]", at(6, 1, 2)),
            ("[1,]", at(3, 1, 1)),
            ("[,1]", at(0, 0, 0)),
            ("[1 2]", at(0, 0, 0)),
            ("[1]]", at(0, 0, 0)),
            ("[1] x", at(0, 0, 0)),
            ("[1", at(0, 0, 0)),
            ("[-]", at(0, 0, 0)),
            ("[[1], [2] [3]]", at(6, 1, 1)),
            ("[[1],[2,]]", at(8, 2, 2)),
        ] {
            assert_eq!(stopped(text, 2, 2), want, "{text}");
            // With room after it, every element is in reach of the window reader: it
            // must stop at the same place.
            let padded = format!("{text}{}", " ".repeat(WINDOW));
            assert_eq!(stopped(&padded, 2, 2), want, "{text} padded");
        }
    }

    /// The window reader: the spellings it takes, those it leaves to the slow path (the
    /// result must be the same), and a run cut short by `max`.
    #[test]
    fn the_window_reader_reads_what_the_slow_path_reads() {
        let pad = " ".repeat(WINDOW);
        let read = |items: &[&str], max: usize| {
            let text = format!("[{}]{pad}", items.join(", "));
            let mut out = Vec::new();
            plain_f32(text.as_bytes(), 1, max, &mut out).map(|n| (n, out))
        };
        let numbers = [
            "0.278431",
            "-0.819608",
            "0",
            "-0",
            "7",
            "1234567",
            "12345678",
            "0.12345678",
            "0.1234567890123456",
            "0.27843138575553894",
            "0.123456789012345678901234",
            "1.5e-3",
            "-2E+2",
            "3e38",
            "1e-45",
            "0.000000000000000000001",
            "16777217",
            "0.30000001192092896",
        ];
        let want: Vec<u8> = numbers
            .iter()
            .flat_map(|t| t.parse::<f32>().unwrap().to_le_bytes())
            .collect();
        assert_eq!(read(&numbers, 64), Ok((numbers.len(), want.clone())));
        // Each alone, first, middle and last of its array.
        for (k, t) in numbers.iter().enumerate() {
            let one = &want[k * 4..k * 4 + 4];
            let three = [*t, *t, *t];
            assert_eq!(read(&three, 3), Ok((3, one.repeat(3))), "{t}");
        }
        // `max` reached inside a run: stopped at the element past it (after its comma).
        assert_eq!(
            read(&["1", "2", "3", "4"], 2),
            Err(Resume {
                pos: 6,
                depth: 1,
                count: 2
            })
        );
    }

    #[test]
    fn digit_runs_are_read_eight_bytes_at_once() {
        for (text, want) in [
            (&b"12345678"[..], Some((12345678, 8))),
            (b"00000009", Some((9, 8))),
            (b"99999999", Some((99999999, 8))),
            (b"123456789", Some((12345678, 8))),
            (b"1234567,", Some((1234567, 7))),
            (b"123456]]", Some((123456, 6))),
            (b"0.5,0.25", Some((0, 1))),
            (b"9/2345678", Some((9, 1))),
            (b"9:2345678", Some((9, 1))),
            (b"98\x802345678", Some((98, 2))),
            (b",1234567", Some((0, 0))),
            (b"/2345678", Some((0, 0))),
            (b":2345678", Some((0, 0))),
            (b"1234567", None),
        ] {
            assert_eq!(
                digit_run(text, 0),
                want,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(digit_run(b"x00000009", 1), Some((9, 8)));
        assert_eq!(digit_run(b"x0000000", 1), None);
        // Every byte value after a digit ends the run unless it is a digit.
        for b in 0..=255u8 {
            let text = [b'7', b, b'1', b'1', b'1', b'1', b'1', b'1'];
            let want = if b.is_ascii_digit() {
                (70_111_111 + u64::from(b - b'0') * 1_000_000, 8)
            } else {
                (7, 1)
            };
            assert_eq!(digit_run(&text, 0), Some(want), "byte {b}");
        }
    }

    #[test]
    fn non_finite_floats_are_written_as_null() {
        let raw: Vec<u8> = [f32::NAN, f32::INFINITY, -0.0, 1.5]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        write_array(&mut out, DataType::F32, &raw).unwrap();
        assert_eq!(out, b"[null,null,-0.0,1.5]");
        assert!(write_array(&mut out, DataType::F32, &raw[..3]).is_err());
    }
}

/// The scanner against serde_json (the reader it replaces) on random numbers of every
/// spelling, nested and spaced at random; the writer against serde_json's own output.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const NUMERIC: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F16,
        DataType::Bf16,
        DataType::F32,
        DataType::F64,
    ];

    /// A JSON number or boolean, spelled as clients spell them, and at the edges.
    fn token() -> impl Strategy<Value = String> {
        let edges: Vec<i128> = vec![
            0,
            i8::MIN.into(),
            i8::MAX.into(),
            u8::MAX.into(),
            i16::MIN.into(),
            i16::MAX.into(),
            u16::MAX.into(),
            i32::MIN.into(),
            i32::MAX.into(),
            u32::MAX.into(),
            i64::MIN.into(),
            i64::MAX.into(),
            u64::MAX.into(),
            1 << 24,
            1 << 53,
        ];
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (proptest::sample::select(edges), -2i128..=2).prop_map(|(e, d)| (e + d).to_string()),
            (proptest::sample::select(vec![1i128, -1]), -2i128..=2)
                .prop_map(|(s, d)| (s * (i128::from(u64::MAX) + 1) + d).to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{:?}", f64::from(f))),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            // Halfway between two f32s, exactly and as the nearest short f64: where
            // rounding once and rounding twice part.
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite() && *f != f32::MAX)
                .prop_flat_map(|f| {
                    let mid = (f64::from(f) + f64::from(f.next_up())) / 2.0;
                    proptest::sample::select(vec![format!("{mid:e}"), format!("{mid:.80e}")])
                }),
            // Subnormals of both widths.
            (1u64..1 << 52).prop_map(|b| format!("{:e}", f64::from_bits(b))),
            (1u32..1 << 23).prop_map(|b| format!("{:e}", f32::from_bits(b))),
            // Any spelling the grammar allows, short or long, tiny or huge.
            (
                "-?",
                "0|[1-9][0-9]{0,24}",
                proptest::option::of("[0-9]{1,24}"),
                proptest::option::of(("[eE][+-]?", 0u32..420))
            )
                .prop_map(|(sign, int, frac, exp)| {
                    let mut t = format!("{sign}{int}");
                    if let Some(f) = frac {
                        t += &format!(".{f}");
                    }
                    if let Some((e, x)) = exp {
                        t += &format!("{e}{x}");
                    }
                    t
                }),
            proptest::sample::select(vec![
                "-0",
                "-0.0",
                "0e999999999",
                "1e400",
                "-1e400",
                "2e-400",
                "3.4028235e38",
                "3.4028236e38",
                "65504",
                "65520",
                "true",
                "false",
                "1.0",
                "1e2",
                "-1E+2",
            ])
            .prop_map(String::from),
        ]
    }

    /// What serde_json made of one token for `dtype`: its raw bytes, or a refusal.
    fn reference(tok: &str, dtype: DataType) -> Option<Vec<u8>> {
        let v: serde_json::Value = serde_json::from_str(tok).ok()?;
        // An integer spelled without a fraction or an exponent is taken exactly (serde_json
        // reads one beyond 64 bits as a float, which would round -2^63 - 1 into range).
        let spelled_whole = !tok.contains(['.', 'e', 'E']);
        let whole = |v: &serde_json::Value| -> Option<i128> {
            match v {
                serde_json::Value::Bool(b) => Some(i128::from(*b)),
                serde_json::Value::Number(_) if spelled_whole => tok.parse().ok(),
                serde_json::Value::Number(n) => {
                    let f = n.as_f64()?;
                    (f.fract() == 0.0 && f.is_finite()).then_some(f as i128)
                }
                _ => None,
            }
        };
        let float = || v.as_f64().filter(|_| v.is_number());
        fn int<T: TryFrom<i128>, const N: usize>(
            v: Option<i128>,
            le: fn(T) -> [u8; N],
        ) -> Option<Vec<u8>> {
            Some(le(T::try_from(v?).ok()?).to_vec())
        }
        match dtype {
            DataType::Bool => match &v {
                serde_json::Value::Bool(b) => Some(vec![u8::from(*b)]),
                serde_json::Value::Number(n) if n.as_u64().is_some_and(|u| u <= 1) => {
                    Some(vec![n.as_u64()? as u8])
                }
                _ => None,
            },
            DataType::U8 => int::<u8, 1>(whole(&v), u8::to_le_bytes),
            DataType::I8 => int::<i8, 1>(whole(&v), i8::to_le_bytes),
            DataType::U16 => int::<u16, 2>(whole(&v), u16::to_le_bytes),
            DataType::I16 => int::<i16, 2>(whole(&v), i16::to_le_bytes),
            DataType::U32 => int::<u32, 4>(whole(&v), u32::to_le_bytes),
            DataType::I32 => int::<i32, 4>(whole(&v), i32::to_le_bytes),
            DataType::U64 => int::<u64, 8>(whole(&v), u64::to_le_bytes),
            DataType::I64 => int::<i64, 8>(whole(&v), i64::to_le_bytes),
            DataType::F64 => Some(float()?.to_le_bytes().to_vec()),
            // Rounded once from the text: serde_json has no f32 reader of its own.
            DataType::F32 => {
                float()?;
                let f: f32 = tok.parse().ok()?;
                f.is_finite().then(|| f.to_le_bytes().to_vec())
            }
            DataType::F16 => {
                let h = half::f16::from_f64(float()?);
                h.is_finite().then(|| h.to_le_bytes().to_vec())
            }
            DataType::Bf16 => {
                let h = half::bf16::from_f64(float()?);
                h.is_finite().then(|| h.to_le_bytes().to_vec())
            }
            DataType::Bytes => None,
        }
    }

    /// `tokens` as a JSON array, in rows of `row` when nested, spaced with `ws`.
    fn render(tokens: &[String], row: Option<usize>, ws: &[String]) -> String {
        let sp = |i: usize| ws[i % ws.len()].as_str();
        let flat = |toks: &[String], base: usize| {
            let items: Vec<String> = toks
                .iter()
                .enumerate()
                .map(|(k, t)| format!("{}{t}{}", sp(base + 2 * k), sp(base + 2 * k + 1)))
                .collect();
            format!("[{}]", items.join(","))
        };
        match row {
            None => flat(tokens, 0),
            Some(r) => {
                let rows: Vec<String> = tokens
                    .chunks(r.max(1))
                    .enumerate()
                    .map(|(k, c)| format!("{}{}", sp(k), flat(c, k * 7)))
                    .collect();
                format!("[{}{}]", rows.join(","), sp(3))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn reads_what_serde_json_read(
            which in 0usize..NUMERIC.len(),
            tokens in proptest::collection::vec(token(), 0..12),
            row in proptest::option::of(1usize..5),
            ws in proptest::collection::vec("[ \t\n\r]{0,2}", 1..6),
            // Trailing spaces put every element in reach of the FP32 window reader.
            pad in proptest::sample::select(vec![0usize, 48]),
        ) {
            let dtype = NUMERIC[which];
            let text = render(&tokens, row, &ws) + &" ".repeat(pad);
            let want: Option<Vec<u8>> = tokens
                .iter()
                .map(|t| reference(t, dtype))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat());
            let mut out = Vec::new();
            let got = read_numeric(text.as_bytes(), dtype, 2, tokens.len(), &mut out);
            match want {
                Some(bytes) => {
                    prop_assert_eq!(got, Ok(tokens.len()), "{} {}", dtype, text);
                    prop_assert_eq!(out, bytes, "{} {}", dtype, text);
                }
                None => prop_assert!(got.is_err(), "{} {} gave {:?}", dtype, text, out),
            }
        }

        /// The FP32 loop, and the general scanner from where it stopped, read what the
        /// general scanner alone reads, bit for bit, and refuse what it refuses, alike.
        #[test]
        fn the_fp32_loop_then_the_scanner_read_what_the_scanner_reads(
            tokens in proptest::collection::vec(
                prop_oneof![
                    (
                        "-?",
                        "0|[1-9][0-9]{0,12}",
                        proptest::option::of("[0-9]{1,30}"),
                        proptest::option::of("[eE][+-]?[0-9]{1,5}"),
                    )
                        .prop_map(|(sign, int, frac, exp)| {
                            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
                            format!("{sign}{int}{frac}{}", exp.unwrap_or_default())
                        }),
                    any::<f32>()
                        .prop_filter("finite", |f| f.is_finite())
                        .prop_map(|f| format!("{:?}", f64::from(f))),
                    token(),
                ],
                0..40
            ),
            row in proptest::option::of(1usize..5),
            short in any::<bool>(),
            ws in proptest::collection::vec("[ \t\n\r]{0,2}", 1..6),
            // Trailing spaces put every element in reach of the window reader.
            pad in proptest::sample::select(vec![0usize, 1, 47, 48, 64]),
        ) {
            let text = render(&tokens, row, &ws) + &" ".repeat(pad);
            let max = tokens.len().saturating_sub(usize::from(short));
            let mut both = Vec::new();
            let got = read_numeric(text.as_bytes(), DataType::F32, 2, max, &mut both);
            let mut alone = Vec::new();
            let want = read_tracked(text.as_bytes(), DataType::F32, 2, max, &mut alone, &mut (), Resume::default());
            prop_assert_eq!(&got, &want, "{}", text);
            if want.is_ok() {
                prop_assert_eq!(both, alone, "{}", text);
            }
        }

        #[test]
        fn writes_what_serde_json_wrote(which in 0usize..NUMERIC.len(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dtype = NUMERIC[which];
            let size = dtype.element_size().unwrap();
            let raw = &raw[..raw.len() / size * size];
            let mut out = Vec::new();
            write_array(&mut out, dtype, raw).unwrap();
            let c = raw.chunks_exact(size);
            let want = match dtype {
                DataType::Bool => serde_json::to_vec(&c.map(|b| b[0] != 0).collect::<Vec<_>>()),
                DataType::U8 => serde_json::to_vec(&raw),
                DataType::I8 => serde_json::to_vec(&c.map(|b| b[0] as i8).collect::<Vec<_>>()),
                DataType::U16 => serde_json::to_vec(&c.map(|b| u16::from_le_bytes([b[0], b[1]])).collect::<Vec<_>>()),
                DataType::I16 => serde_json::to_vec(&c.map(|b| i16::from_le_bytes([b[0], b[1]])).collect::<Vec<_>>()),
                DataType::U32 => serde_json::to_vec(&c.map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::I32 => serde_json::to_vec(&c.map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::U64 => serde_json::to_vec(&c.map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::I64 => serde_json::to_vec(&c.map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::F16 => serde_json::to_vec(&c.map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect::<Vec<_>>()),
                DataType::Bf16 => serde_json::to_vec(&c.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect::<Vec<_>>()),
                DataType::F32 => serde_json::to_vec(&c.map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::F64 => serde_json::to_vec(&c.map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()),
                DataType::Bytes => unreachable!(),
            }.unwrap();
            prop_assert_eq!(&out, &want);
            // And it reads back to the same tensor, bit for bit, where JSON can say it.
            let v: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
            if v.iter().all(|x| !x.is_null()) {
                let mut back = Vec::new();
                read_numeric(&out, dtype, 1, v.len(), &mut back).unwrap();
                if dtype == DataType::Bool {
                    prop_assert_eq!(back, raw.iter().map(|&b| u8::from(b != 0)).collect::<Vec<_>>());
                } else {
                    prop_assert_eq!(back, raw);
                }
            }
        }
    }
}
