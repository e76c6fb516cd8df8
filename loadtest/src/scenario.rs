//! What one checkout does and which saga path it takes: the mix of
//! outcomes, the popularity of products and the order bodies.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// The saga path a checkout is meant to take, chosen by what it orders and
/// how it pays (see "Reaching every path on purpose" in docs/saga.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// A card that pays, a served country, a product in stock: CONFIRMED.
    Valid,
    /// A card the provider declines: CANCELLED `payment_declined`.
    Declined,
    /// A country shipping does not serve: CANCELLED `shipping_failed`.
    UnsupportedCountry,
    /// More units than the out-of-stock product has: CANCELLED `out_of_stock`.
    OutOfStock,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::Valid,
        Path::Declined,
        Path::UnsupportedCountry,
        Path::OutOfStock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::Valid => "valid",
            Path::Declined => "declined",
            Path::UnsupportedCountry => "unsupported_country",
            Path::OutOfStock => "out_of_stock",
        }
    }

    /// The terminal outcome this path must end in.
    pub fn expected(self) -> Outcome {
        match self {
            Path::Valid => Outcome::confirmed(),
            Path::Declined => Outcome::cancelled("payment_declined"),
            Path::UnsupportedCountry => Outcome::cancelled("shipping_failed"),
            Path::OutOfStock => Outcome::cancelled("out_of_stock"),
        }
    }

    fn card_token(self) -> &'static str {
        match self {
            Path::Declined => "tok_decline",
            _ => "tok_visa",
        }
    }

    fn country(self) -> &'static str {
        match self {
            // Antarctica: a valid country code no carrier serves.
            Path::UnsupportedCountry => "AQ",
            _ => "DE",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A terminal order as the API shows it: `CONFIRMED`, or `CANCELLED` with a
/// reason. Displayed as `CONFIRMED` or `CANCELLED:payment_declined`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    pub status: String,
    pub reason: Option<String>,
}

impl Outcome {
    pub fn confirmed() -> Self {
        Self {
            status: "CONFIRMED".to_owned(),
            reason: None,
        }
    }

    pub fn cancelled(reason: &str) -> Self {
        Self {
            status: "CANCELLED".to_owned(),
            reason: Some(reason.to_owned()),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{}:{reason}", self.status),
            None => f.write_str(&self.status),
        }
    }
}

/// How often each path is taken, as integer weights:
/// `valid=90,declined=5,unsupported_country=3,out_of_stock=2`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mix {
    weights: BTreeMap<Path, u32>,
}

impl Default for Mix {
    fn default() -> Self {
        "valid=90,declined=5,unsupported_country=3,out_of_stock=2"
            .parse()
            .expect("the default mix is valid")
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("`{part}` in the mix is not NAME=WEIGHT"))?;
            let path = Path::ALL
                .into_iter()
                .find(|path| path.name() == name.trim())
                .with_context(|| {
                    format!(
                        "unknown path `{name}` in the mix (one of: valid, declined, \
                         unsupported_country, out_of_stock)"
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight `{weight}` of {name} is not a whole number"))?;
            if weights.insert(path, weight).is_some() {
                bail!("{name} appears twice in the mix");
            }
        }
        weights.retain(|_, weight| *weight > 0);
        if weights.is_empty() {
            bail!("the mix `{s}` gives every path weight 0");
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(path, weight)| format!("{path}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// A path drawn with probability proportional to its weight; `roll` is
    /// uniform in `0..1`.
    pub fn pick(&self, roll: f64) -> Path {
        let total: u32 = self.weights.values().sum();
        let mut point = roll * f64::from(total);
        for (&path, &weight) in &self.weights {
            point -= f64::from(weight);
            if point < 0.0 {
                return path;
            }
        }
        // Only reachable through rounding at roll ≈ 1.
        *self.weights.keys().last().unwrap_or(&Path::Valid)
    }

    /// The share of checkouts that take `path`.
    pub fn share(&self, path: Path) -> f64 {
        let total: u32 = self.weights.values().sum();
        f64::from(self.weights.get(&path).copied().unwrap_or(0)) / f64::from(total)
    }
}

/// Which products valid checkouts buy: all equally often, or following
/// Zipf's law with exponent `s` (the first product most often, the k-th
/// `1/k^s` as often), as real shops' best-sellers do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "exponent", rename_all = "snake_case")]
pub enum Popularity {
    Uniform,
    Zipf(f64),
}

impl FromStr for Popularity {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "uniform" {
            return Ok(Popularity::Uniform);
        }
        if let Some(exponent) = s.strip_prefix("zipf:") {
            let exponent: f64 = exponent
                .parse()
                .with_context(|| format!("`{exponent}` is not a Zipf exponent"))?;
            if exponent.is_finite() && exponent > 0.0 {
                return Ok(Popularity::Zipf(exponent));
            }
        }
        bail!("popularity must be `uniform` or `zipf:S` with S > 0, not `{s}`")
    }
}

impl fmt::Display for Popularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Popularity::Uniform => f.write_str("uniform"),
            Popularity::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// Draws a product index from a [`Popularity`] over `n` products.
#[derive(Clone, Debug)]
pub struct ProductPicker {
    /// Cumulative probabilities, ascending, the last one 1.
    cumulative: Vec<f64>,
}

impl ProductPicker {
    pub fn new(popularity: Popularity, n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(n > 0, "there are no products to order");
        let weights: Vec<f64> = (1..=n)
            .map(|rank| match popularity {
                Popularity::Uniform => 1.0,
                Popularity::Zipf(s) => 1.0 / (rank as f64).powf(s),
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut running = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                running += w / total;
                running
            })
            .collect();
        Ok(Self { cumulative })
    }

    /// The index of a product; `roll` is uniform in `0..1`.
    pub fn pick(&self, roll: f64) -> usize {
        self.cumulative
            .partition_point(|&c| c <= roll)
            .min(self.cumulative.len() - 1)
    }
}

/// The body of `POST /api/v1/orders` for one checkout on `path`.
pub fn order_body(path: Path, sku: &str, quantity: i64) -> Value {
    json!({
        "items": [{"sku": sku, "quantity": quantity}],
        "payment": {"card_token": path.card_token()},
        "shipping_address": {
            "name": "Load Test",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": path.country(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_picks_in_proportion() {
        let mix: Mix = "valid=90, declined=5,unsupported_country=3,out_of_stock=2"
            .parse()
            .expect("mix");
        assert_eq!(mix, Mix::default());
        assert_eq!(
            mix.to_string(),
            "valid=90,declined=5,unsupported_country=3,out_of_stock=2"
        );
        let mut counts = BTreeMap::new();
        let steps = 10_000;
        for i in 0..steps {
            let roll = (i as f64 + 0.5) / steps as f64;
            *counts.entry(mix.pick(roll)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Path::Valid], 9000);
        assert_eq!(counts[&Path::Declined], 500);
        assert_eq!(counts[&Path::UnsupportedCountry], 300);
        assert_eq!(counts[&Path::OutOfStock], 200);
        assert_eq!(mix.share(Path::Declined), 0.05);
        assert!(matches!(mix.pick(0.999_999_999), Path::OutOfStock));
    }

    #[test]
    fn a_mix_may_leave_paths_out_but_not_all() {
        let only_valid: Mix = "valid=1".parse().expect("mix");
        assert_eq!(only_valid.pick(0.99), Path::Valid);
        assert_eq!(only_valid.share(Path::OutOfStock), 0.0);
        for bad in [
            "",
            "valid=0",
            "valid",
            "valid=x",
            "gift=3",
            "valid=1,valid=2",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn uniform_popularity_spreads_evenly() {
        let picker = ProductPicker::new(Popularity::Uniform, 4).expect("picker");
        let picks: Vec<usize> = [0.0, 0.24, 0.25, 0.5, 0.74, 0.99]
            .into_iter()
            .map(|roll| picker.pick(roll))
            .collect();
        assert_eq!(picks, [0, 0, 1, 2, 2, 3]);
    }

    #[test]
    fn zipf_popularity_favours_the_first_products() {
        let picker = ProductPicker::new(Popularity::Zipf(1.0), 3).expect("picker");
        // Weights 1, 1/2, 1/3 of 11/6: shares 6/11, 3/11, 2/11.
        let mut counts = [0usize; 3];
        let steps = 11_000;
        for i in 0..steps {
            counts[picker.pick((i as f64 + 0.5) / steps as f64)] += 1;
        }
        assert_eq!(counts, [6000, 3000, 2000]);
        assert!(ProductPicker::new(Popularity::Uniform, 0).is_err());
    }

    #[test]
    fn popularity_parses() {
        assert_eq!(
            "uniform".parse::<Popularity>().expect("p"),
            Popularity::Uniform
        );
        assert_eq!(
            "zipf:1.1".parse::<Popularity>().expect("p"),
            Popularity::Zipf(1.1)
        );
        for bad in ["zipf", "zipf:0", "zipf:-1", "zipf:x", "pareto"] {
            assert!(bad.parse::<Popularity>().is_err(), "{bad}");
        }
        assert_eq!(Popularity::Zipf(1.1).to_string(), "zipf:1.1");
    }

    #[test]
    fn each_path_orders_what_leads_to_its_outcome() {
        let body = order_body(Path::Declined, "SKU-0003", 1);
        assert_eq!(body["payment"]["card_token"], "tok_decline");
        assert_eq!(body["items"][0]["sku"], "SKU-0003");
        assert_eq!(
            order_body(Path::UnsupportedCountry, "SKU-0001", 1)["shipping_address"]["country"],
            "AQ"
        );
        assert_eq!(Path::Valid.expected().to_string(), "CONFIRMED");
        assert_eq!(
            Path::OutOfStock.expected().to_string(),
            "CANCELLED:out_of_stock"
        );
    }
}
