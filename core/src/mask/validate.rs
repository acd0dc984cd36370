//! Check digits and structural rules that turn a pattern match into a finding.
//!
//! Each function takes the matched bytes (ASCII: every detector pattern matches ASCII only) and
//! says whether they are a valid instance of the entity. None of them looks past the match: what
//! follows a match is the pattern's business (see `detect`), so a streamed value is judged the
//! same whatever the chunking.

/// The ASCII digits of `s`, in order, as numbers 0–9; none at all when there are more than
/// [`MAX_DIGITS`], which no identifier a validator takes has (so each refuses the value, whatever
/// length it asks for).
fn digits(s: &[u8]) -> Digits {
    // Without a branch per byte: every byte is written where the next digit goes and counts
    // only if it is a digit; past the last slot, writes land in a spare one.
    let mut d = Digits { buf: [0; MAX_DIGITS + 1], len: 0 };
    for &b in s {
        let v = b.wrapping_sub(b'0');
        d.buf[d.len.min(MAX_DIGITS)] = v;
        d.len += usize::from(v < 10);
    }
    if d.len > MAX_DIGITS {
        d.len = 0;
    }
    d
}

/// The most digits [`digits`] keeps (every validator wants 19 or fewer).
const MAX_DIGITS: usize = 32;

/// A value's digits, on the stack: validators run on every candidate match.
struct Digits {
    buf: [u8; MAX_DIGITS + 1],
    len: usize,
}

impl std::ops::Deref for Digits {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Luhn (ISO/IEC 7812-1 annex B) over `d`, the check digit last.
pub(crate) fn luhn(d: &[u8]) -> bool {
    /// A digit doubled, less 9 when that is over 9.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    if d.len() < 2 {
        return false;
    }
    let mut sum = 0u32;
    let mut pairs = d.rchunks_exact(2);
    for pair in &mut pairs {
        sum += u32::from(pair[1]) + DOUBLED[usize::from(pair[0] % 10)];
    }
    sum += pairs.remainder().iter().map(|&x| u32::from(x)).sum::<u32>();
    sum.is_multiple_of(10)
}

/// SSN (SSA rules since 2011): area not 000, 666 or 900–999; group not 00; serial not 0000.
pub(crate) fn ssn(s: &[u8]) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Payment card: 13–19 digits, Luhn, and an issuer prefix that exists (Visa, Mastercard incl.
/// 2-series, Amex, Discover, JCB, Diners, UnionPay, Maestro).
pub(crate) fn card(s: &[u8]) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return false;
    }
    let p = |n: usize| d[..n].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let len = d.len();
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => (51..=55).contains(&p(2)) && len == 16 || matches!(p(2), 50 | 56..=58) && len >= 12,
        2 => (2221..=2720).contains(&p(4)) && len == 16,
        3 => {
            (matches!(p(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&p(4)) && len >= 16)
                || (matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3))) && len >= 14
        }
        6 => (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62 || p(2) == 67) && len >= 16,
        _ => false,
    }
}

/// NPI (CMS): ten digits starting 1 or 2 whose Luhn check over `80840` + the number holds.
pub(crate) fn npi(s: &[u8]) -> bool {
    let d = digits(s);
    if d.len() != 10 || !matches!(d[0], 1 | 2) {
        return false;
    }
    let mut full = [8, 0, 8, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    full[5..].copy_from_slice(&d);
    luhn(&full)
}

/// DEA registration number: two letters (the first a registrant type) and seven digits where
/// (d1 + d3 + d5) + 2 × (d2 + d4 + d6) ends in d7.
pub(crate) fn dea(s: &[u8]) -> bool {
    if s.len() != 9 || !b"ABCDEFGHJKLMPRSTUX".contains(&s[0].to_ascii_uppercase()) {
        return false;
    }
    let d = digits(&s[2..]);
    if d.len() != 7 {
        return false;
    }
    let sum = u32::from(d[0] + d[2] + d[4]) + 2 * u32::from(d[1] + d[3] + d[5]);
    sum % 10 == u32::from(d[6])
}

/// IBAN (ISO 13616): two letters of a country code and two check digits, a known country's
/// length, and the mod-97 check.
pub(crate) fn iban(s: &[u8]) -> bool {
    let mut buf = [0_u8; 34];
    let mut len = 0;
    for &b in s.iter().filter(|b| b.is_ascii_alphanumeric()) {
        if len == buf.len() {
            return false;
        }
        buf[len] = b.to_ascii_uppercase();
        len += 1;
        // A country code and two check digits, or not an IBAN (most values that get here are
        // account numbers and MRNs: they stop here).
        if len == 4 && !(buf[..2].iter().all(u8::is_ascii_alphabetic) && buf[2..4].iter().all(u8::is_ascii_digit)) {
            return false;
        }
    }
    let c = &buf[..len];
    // Under 15, and so any that stopped before the check digits, is too short for any country.
    if c.len() < 15 {
        return false;
    }
    if iban_length(&c[..2]).is_some_and(|n| n != c.len()) {
        return false;
    }
    iban_mod97(c)
}

/// Whether `c` (upper-case letters and digits), its first four moved to the end and each letter
/// read as two digits (A = 10), leaves 1 modulo 97.
fn iban_mod97(c: &[u8]) -> bool {
    let mut rem = 0u32;
    let (head, rest) = c.split_at(4.min(c.len()));
    for &b in rest.iter().chain(head) {
        let v = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// Registered IBAN lengths of the common countries; others are checked by mod 97 only.
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"DE" => 22,
        b"GB" | b"IE" => 22,
        b"FR" | b"IT" | b"MC" => 27,
        b"ES" | b"SE" | b"CZ" | b"SK" => 24,
        b"NL" => 18,
        b"BE" => 16,
        b"CH" | b"LI" => 21,
        b"AT" => 20,
        b"PL" | b"HU" => 28,
        b"PT" => 25,
        b"DK" | b"FI" => 18,
        b"NO" => 15,
        b"LU" => 20,
        b"GR" => 27,
        b"SA" => 24,
        b"AE" => 23,
        _ => return None,
    })
}

/// VIN (49 CFR 565): 17 characters without I, O, Q; the check digit at position 9 from the
/// transliterated values and the position weights.
pub(crate) fn vin(s: &[u8]) -> bool {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    if s.len() != 17 || !s.iter().any(u8::is_ascii_digit) || !s.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b.to_ascii_uppercase() {
            d @ b'0'..=b'9' => u32::from(d - b'0'),
            b'A' | b'J' => 1,
            b'B' | b'K' | b'S' => 2,
            b'C' | b'L' | b'T' => 3,
            b'D' | b'M' | b'U' => 4,
            b'E' | b'N' | b'V' => 5,
            b'F' | b'W' => 6,
            b'G' | b'P' | b'X' => 7,
            b'H' | b'Y' => 8,
            b'R' | b'Z' => 9,
            _ => return None,
        })
    };
    let mut sum = 0;
    for (i, &b) in s.iter().enumerate() {
        let Some(v) = value(b) else { return false };
        sum += v * WEIGHTS[i];
    }
    let check = match sum % 11 {
        10 => b'X',
        n => b'0' + n as u8,
    };
    s[8].to_ascii_uppercase() == check
}

/// IMEI (3GPP TS 23.003): 15 digits, Luhn.
pub(crate) fn imei(s: &[u8]) -> bool {
    let d = digits(s);
    d.len() == 15 && luhn(&d)
}

/// A dotted IPv4 address: exactly four parts, each 0–255 without a leading zero.
pub(crate) fn ipv4(s: &[u8]) -> bool {
    let parts: Vec<&[u8]> = s.split(|&b| b == b'.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty() && p.len() <= 3 && (p.len() == 1 || p[0] != b'0') && {
                let v = p.iter().fold(0u32, |a, &x| a * 10 + u32::from(x - b'0'));
                v <= 255
            }
        })
}

/// An IPv6 address in any of the RFC 4291 §2.2 text forms.
pub(crate) fn ipv6(s: &[u8]) -> bool {
    std::str::from_utf8(s).is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok() && t.contains(':'))
}

/// A calendar date: the day exists in the month (29 February in any year).
pub(crate) fn date(month: u32, day: u32) -> bool {
    let max = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => 29,
        _ => return false,
    };
    (1..=max).contains(&day)
}

/// A date written as digits — ISO `YYYY-MM-DD` or US `M/D/YY(YY)` — with a real month and day.
pub(crate) fn numeric_date(s: &[u8]) -> bool {
    let parts: Vec<u32> = s
        .split(|&b| b == b'-' || b == b'/')
        .map(|p| p.iter().fold(0u32, |a, &x| a.saturating_mul(10).saturating_add(u32::from(x.wrapping_sub(b'0')))))
        .collect();
    match (parts.as_slice(), s.contains(&b'/')) {
        ([y, m, d], false) => (1900..=2099).contains(y) && date(*m, *d),
        ([m, d, _], true) => date(*m, *d),
        _ => false,
    }
}

/// A written date (`April 17, 2023`, `17 Apr 2023`): the month word and the day agree.
pub(crate) fn written_date(s: &[u8]) -> bool {
    let lower = s.to_ascii_lowercase();
    let month = MONTHS.iter().position(|m| lower.windows(3).any(|w| w == m.as_bytes())).map(|i| i as u32 + 1);
    let day = lower
        .split(|b| !b.is_ascii_digit())
        .filter(|p| !p.is_empty() && p.len() <= 2)
        .map(|p| p.iter().fold(0u32, |a, &x| a * 10 + u32::from(x - b'0')))
        .next();
    matches!((month, day), (Some(m), Some(d)) if date(m, d))
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// US state and territory postal codes (USPS Publication 28 appendix B).
pub(crate) fn us_state(s: &[u8]) -> bool {
    const STATES: &[&[u8; 2]] = &[
        b"AL", b"AK", b"AZ", b"AR", b"CA", b"CO", b"CT", b"DE", b"DC", b"FL", b"GA", b"HI", b"ID", b"IL", b"IN", b"IA",
        b"KS", b"KY", b"LA", b"ME", b"MD", b"MA", b"MI", b"MN", b"MS", b"MO", b"MT", b"NE", b"NV", b"NH", b"NJ", b"NM",
        b"NY", b"NC", b"ND", b"OH", b"OK", b"OR", b"PA", b"RI", b"SC", b"SD", b"TN", b"TX", b"UT", b"VT", b"VA", b"WA",
        b"WV", b"WI", b"WY", b"PR", b"GU", b"VI", b"AS", b"MP",
    ];
    STATES.iter().any(|st| st.as_slice() == s)
}

/// A phone number's digits: NANP (ten digits, or eleven with the country code 1, area code and
/// exchange starting 2–9) or E.164 (a `+` and 8–15 digits).
pub(crate) fn phone(s: &[u8]) -> bool {
    let d = digits(s);
    if s.first() == Some(&b'+') {
        if d.first() == Some(&1) {
            return d.len() == 11 && d[1] >= 2 && d[4] >= 2;
        }
        return (8..=15).contains(&d.len());
    }
    match d.len() {
        10 => d[0] >= 2 && d[3] >= 2,
        11 => d[0] == 1 && d[1] >= 2 && d[4] >= 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_digits_than_any_identifier_are_none() {
        let run = |n: usize| "7".repeat(n).into_bytes();
        assert_eq!(digits(&run(MAX_DIGITS)).len(), MAX_DIGITS);
        assert!(digits(&run(MAX_DIGITS + 1)).is_empty());
        // A valid card number with its check digit last, behind more digits than anything has.
        let mut long = run(MAX_DIGITS);
        long.extend_from_slice(b"4111111111111111");
        assert!(card(b"4111111111111111") && !card(&long));
    }

    proptest::proptest! {
        /// The pairwise Luhn sum and the branch-free digit copy agree with the rule as written.
        #[test]
        fn luhn_and_digits_follow_the_rule(text in proptest::collection::vec(proptest::sample::select(b"0123456789 -x".to_vec()), 0..40)) {
            let want: Vec<u8> = text.iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0').collect();
            let got = digits(&text);
            proptest::prop_assert_eq!(&*got, if want.len() > MAX_DIGITS { &[][..] } else { &want[..] });
            let sum: u32 = want
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &x)| if i % 2 == 1 { let v = u32::from(x) * 2; if v > 9 { v - 9 } else { v } } else { u32::from(x) })
                .sum();
            proptest::prop_assert_eq!(luhn(&want), want.len() >= 2 && sum.is_multiple_of(10), "{:?}", want);
        }
    }

    #[test]
    fn check_digits_accept_real_numbers_and_refuse_one_digit_off() {
        assert!(card(b"4111 1111 1111 1111") && !card(b"4111 1111 1111 1112"));
        assert!(card(b"378282246310005") && card(b"6011111111111117") && card(b"5555555555554444"));
        assert!(npi(b"1234567893") && !npi(b"1234567890"));
        assert!(dea(b"AB1234563") && !dea(b"AB1234564"));
        assert!(iban(b"GB82 WEST 1234 5698 7654 32") && iban(b"DE89370400440532013000"));
        assert!(!iban(b"GB82 WEST 1234 5698 7654 33"));
        // Mod 97 holds here, but the check digits are letters.
        assert!(!iban(b"GBAK WEST 1234 5698 7654 32") && iban_mod97(b"GBAKWEST12345698765432"));
        assert!(vin(b"1M8GDM9AXKP042788") && !vin(b"11111111111111111"));
        assert!(imei(b"490154203237518") && !imei(b"490154203237519"));
        assert!(ssn(b"123-45-6789") && !ssn(b"000-12-3456") && !ssn(b"666-12-3456") && !ssn(b"912-12-3456"));
        assert!(!ssn(b"123-00-4567") && !ssn(b"123-45-0000"));
    }

    #[test]
    fn addresses_dates_and_phones_are_structurally_checked() {
        assert!(ipv4(b"192.168.1.20") && !ipv4(b"256.1.1.1") && !ipv4(b"1.2.3.4.5") && !ipv4(b"01.2.3.4"));
        assert!(ipv6(b"2001:db8::1") && ipv6(b"::1") && !ipv6(b"14:05:22"));
        assert!(numeric_date(b"2023-04-17") && numeric_date(b"4/17/23") && !numeric_date(b"2023-02-30"));
        assert!(written_date(b"April 17, 2023") && written_date(b"17 Apr 2023") && !written_date(b"Apr 31, 2023"));
        assert!(phone(b"(617) 555-0123") && phone(b"+1 617 555 0123") && phone(b"+447911123456"));
        assert!(!phone(b"(117) 555-0123") && !phone(b"+1 117 555 0123"));
        assert!(us_state(b"MA") && !us_state(b"PT"));
    }
}
