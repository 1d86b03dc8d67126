//! Validators: checks a matched text must pass to count, so that a number
//! shaped like a card but failing its checksum is not a card. Each is named
//! in rule files (`validator = "luhn"`).

use base64::Engine;
use serde::Deserialize;

/// A check on the matched text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    /// Payment card: 12–19 digits, a known leading digit, Luhn checksum.
    Luhn,
    /// IBAN: known country, its length, ISO 7064 mod 97-10.
    Iban,
    /// US Social Security number outside the never-issued ranges.
    UsSsn,
    /// A dotted-quad IPv4 address.
    Ipv4,
    /// An IPv6 address (RFC 4291 text forms).
    Ipv6,
    /// A phone number: 7–15 digits (E.164 allows 15), not all the same.
    Phone,
    /// A calendar date with a plausible year (1900–2100).
    Date,
    /// A JWT: its first segment is base64url JSON with an `alg`.
    Jwt,
    /// An e-mail address with well-formed labels.
    Email,
}

impl Validator {
    /// Whether `text` passes.
    pub fn check(self, text: &str) -> bool {
        match self {
            Self::Luhn => luhn(text),
            Self::Iban => iban(text),
            Self::UsSsn => us_ssn(text),
            Self::Ipv4 => text.parse::<std::net::Ipv4Addr>().is_ok(),
            Self::Ipv6 => text.parse::<std::net::Ipv6Addr>().is_ok() && text.contains(':'),
            Self::Phone => phone(text),
            Self::Date => date(text),
            Self::Jwt => jwt(text),
            Self::Email => email(text),
        }
    }
}

fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn luhn(text: &str) -> bool {
    let d = digits(text);
    if !(12..=19).contains(&d.len()) || !(2..=6).contains(&d[0]) {
        return false;
    }
    // Separators must be spaces or dashes only.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN lengths per country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

fn iban(text: &str) -> bool {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if compact.len() < 15 || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let country = std::str::from_utf8(&compact[..2]).unwrap_or("");
    match IBAN_LENGTHS.iter().find(|(c, _)| *c == country) {
        Some((_, len)) if *len == compact.len() => {}
        _ => return false,
    }
    // Move the first four characters to the end; letters count as 10..35.
    let mut remainder: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn us_ssn(text: &str) -> bool {
    let d = digits(text);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    // Numbers published in advertising and never valid (SSA).
    let whole: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    !matches!(whole.as_str(), "078051120" | "219099999" | "123456789")
        && !d.iter().all(|&x| x == d[0])
}

fn phone(text: &str) -> bool {
    let d = digits(text);
    (7..=15).contains(&d.len()) && !d.iter().all(|&x| x == d[0])
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let month_name = MONTHS
        .iter()
        .position(|m| lower.contains(m))
        .map(|i| i as u32 + 1);
    let numbers: Vec<u32> = lower
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let ok = |y: u32, m: u32, d: u32| {
        (1900..=2100).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in(m, y)
    };
    match (month_name, numbers.as_slice()) {
        (Some(m), [a, b]) => ok(*b, m, *a) || ok(*a, m, *b),
        (None, [a, b, c]) if *a >= 1000 => ok(*a, *b, *c),
        // dd/mm/yyyy or mm/dd/yyyy: either reading will do.
        (None, [a, b, c]) => ok(*c, *b, *a) || ok(*c, *a, *b),
        _ => false,
    }
}

fn jwt(text: &str) -> bool {
    let mut parts = text.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s);
    let Ok(header) = decode(header) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return false;
    };
    header.get("alg").is_some_and(|a| a.is_string()) && decode(payload).is_ok()
}

fn email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
}

#[cfg(test)]
mod tests {
    use super::Validator::*;

    #[test]
    fn payment_cards_need_the_luhn_checksum() {
        // Test numbers published by the card schemes.
        for card in [
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "378282246310005",
            "6011111111111117",
            "4012888888881881",
        ] {
            assert!(Luhn.check(card), "{card}");
        }
        assert!(!Luhn.check("4111 1111 1111 1112"));
        assert!(!Luhn.check("0000 0000 0000 0000"));
        assert!(!Luhn.check("4111/1111/1111/1111"));
    }

    #[test]
    fn ibans_need_their_length_and_mod_97() {
        // Examples from the SWIFT IBAN registry.
        for iban in [
            "GB29 NWBK 6016 1331 9268 19",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
        ] {
            assert!(Iban.check(iban), "{iban}");
        }
        assert!(!Iban.check("GB29 NWBK 6016 1331 9268 18"));
        assert!(!Iban.check("DE8937040044053201300"));
        assert!(!Iban.check("ZZ89370400440532013000"));
    }

    #[test]
    fn never_issued_ssns_are_refused() {
        assert!(UsSsn.check("536-22-1234"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
            "078-05-1120",
            "111-11-1111",
        ] {
            assert!(!UsSsn.check(bad), "{bad}");
        }
    }

    #[test]
    fn addresses_dates_phones_and_tokens() {
        assert!(Ipv4.check("192.168.10.254"));
        assert!(!Ipv4.check("256.1.1.1"));
        assert!(Ipv6.check("2001:db8::8a2e:370:7334"));
        assert!(!Ipv6.check("12:30:45"));
        assert!(Date.check("1985-03-12"));
        assert!(Date.check("29/02/2000"));
        assert!(!Date.check("29/02/1900"));
        assert!(Date.check("12 March 1985"));
        assert!(Date.check("March 12, 1985"));
        assert!(!Date.check("1985-13-12"));
        assert!(Phone.check("+44 20 7946 0958"));
        assert!(!Phone.check("000 000 0000"));
        assert!(Jwt.check("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"));
        assert!(!Jwt.check("eyJub3QiOiJhbGcifQ.eyJzdWIiOiIxIn0.c2ln"));
        assert!(Email.check("a.b@example.com"));
        assert!(!Email.check("a..b@example.com"));
        assert!(!Email.check("a@-example.com"));
    }
}
