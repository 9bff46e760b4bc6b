//! Test-time augmentation: a head's output averaged over symmetric views of its input.
//!
//! Interferogram patterns have no preferred orientation in the frame (a dyke strikes any way,
//! the heads train with flips and quarter turns), so a prediction should not depend on
//! them either. [`TestTimeAugment::scores`] averages per-image outputs `(B, L)` (invariant:
//! the classifier's sigmoids) over the views; [`TestTimeAugment::maps`] maps each per-pixel
//! output `(B, K, H, W)` (equivariant: the segmenter's probabilities) back to the input's
//! frame before averaging. Views are `T^t ∘ F` (flip `F` of rows and/or columns, then an
//! optional transpose `T`): the four flips, and with transposes the whole dihedral group of
//! the square (the four rotations and four reflections). Each view is one model call on the
//! whole batch, so memory does not grow with the number of views.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which views of the input a prediction averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TestTimeAugment {
    /// The input as is (one model call).
    #[default]
    None,
    /// Identity, left–right, top–bottom and both flips (4 calls).
    Flips,
    /// The 8 symmetries of the square: the flips, each also transposed (8 calls).
    Dihedral,
}

/// One view: flip rows and/or columns, then optionally swap the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    flip_rows: bool,
    flip_cols: bool,
    transpose: bool,
}

const fn view(flip_rows: bool, flip_cols: bool, transpose: bool) -> View {
    View {
        flip_rows,
        flip_cols,
        transpose,
    }
}

const DIHEDRAL: [View; 8] = [
    view(false, false, false),
    view(false, true, false),
    view(true, false, false),
    view(true, true, false),
    view(false, false, true),
    view(false, true, true),
    view(true, false, true),
    view(true, true, true),
];

impl View {
    fn flip_dims(self, rank: usize) -> Vec<usize> {
        let mut dims = Vec::with_capacity(2);
        if self.flip_rows {
            dims.push(rank - 2);
        }
        if self.flip_cols {
            dims.push(rank - 1);
        }
        dims
    }

    /// The view of `x` (spatial axes last).
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        let y = x.flip(&self.flip_dims(x.rank()))?;
        if self.transpose {
            y.transpose(x.rank() - 2, x.rank() - 1)?.contiguous()
        } else {
            Ok(y)
        }
    }

    /// Undoes [`View::apply`]: flips and the transpose are their own inverses, applied in the
    /// reverse order.
    fn invert(self, y: &Tensor) -> Result<Tensor> {
        let rank = y.rank();
        let y = if self.transpose {
            y.transpose(rank - 2, rank - 1)?.contiguous()?
        } else {
            y.clone()
        };
        y.flip(&self.flip_dims(rank))
    }
}

impl std::str::FromStr for TestTimeAugment {
    type Err = String;

    /// `none`, `flips` or `dihedral` (the config and command-line names).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!("unknown test-time augmentation {s:?} (none, flips or dihedral)")
            })
    }
}

impl TestTimeAugment {
    /// Every choice, fewest views first.
    pub const ALL: [Self; 3] = [Self::None, Self::Flips, Self::Dihedral];

    /// The config and command-line name (`none`, `flips`, `dihedral`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Flips => "flips",
            Self::Dihedral => "dihedral",
        }
    }

    fn views(self) -> &'static [View] {
        match self {
            Self::None => &DIHEDRAL[..1],
            Self::Flips => &DIHEDRAL[..4],
            Self::Dihedral => &DIHEDRAL[..],
        }
    }

    /// Model calls per prediction.
    pub fn num_views(self) -> usize {
        self.views().len()
    }

    /// The mean of `model`'s per-image outputs over the views of the batch `x`
    /// `(B, C, H, W)`; `model` must return the same shape for every view.
    pub fn scores(self, x: &Tensor, model: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        self.average(x, model, |_, y| Ok(y))
    }

    /// The mean of `model`'s per-pixel maps `(B, K, H, W)` over the views of `x`
    /// `(B, C, H, W)`, each map first taken back to `x`'s orientation.
    pub fn maps(self, x: &Tensor, model: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        self.average(x, model, |v, y| v.invert(&y))
    }

    fn average(
        self,
        x: &Tensor,
        model: impl Fn(&Tensor) -> Result<Tensor>,
        back: impl Fn(View, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if x.rank() < 2 {
            candle_core::bail!(
                "test-time augmentation needs spatial axes, got {:?}",
                x.shape()
            )
        }
        let views = self.views();
        if views.len() == 1 {
            return model(x);
        }
        let mut sum: Option<Tensor> = None;
        for &v in views {
            let y = back(v, model(&v.apply(x)?)?)?;
            sum = Some(match sum {
                None => y,
                Some(s) => {
                    if s.shape() != y.shape() {
                        candle_core::bail!(
                            "test-time view {v:?} gave {:?}, the first view {:?}",
                            y.shape(),
                            s.shape()
                        )
                    }
                    (s + y)?
                }
            });
        }
        let sum = sum.expect("at least one view");
        sum / views.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::max_abs_diff;
    use candle_core::{Device, D};

    /// A `(2, 3, 5, 5)` batch without any symmetry.
    fn asymmetric() -> Tensor {
        let dev = Device::Cpu;
        Tensor::arange(0f32, 150.0, &dev)
            .unwrap()
            .reshape((2, 3, 5, 5))
            .unwrap()
            .sqr()
            .unwrap()
    }

    #[test]
    fn views_are_the_eight_distinct_symmetries_and_invert() {
        let x = asymmetric();
        let imgs: Vec<Vec<f32>> = DIHEDRAL
            .iter()
            .map(|v| {
                v.apply(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(imgs[i], imgs[j], "views {i} and {j} coincide");
            }
        }
        for v in DIHEDRAL {
            assert_eq!(
                max_abs_diff(&v.invert(&v.apply(&x).unwrap()).unwrap(), &x),
                0.0
            );
        }
        // Transpose then flip columns is a quarter turn: applying it four times is the identity.
        let quarter = view(true, false, true);
        let mut y = x.clone();
        for k in 1..=4 {
            y = quarter.apply(&y).unwrap();
            assert_eq!(max_abs_diff(&y, &x) == 0.0, k == 4, "after {k} turns");
        }
    }

    #[test]
    fn averaged_outputs_are_invariant_to_the_views() {
        // A model that sees orientation: a weighted sum with a ramp that is not symmetric.
        let x = asymmetric();
        // (squared: the flip average of a linear ramp would be constant)
        let ramp = Tensor::arange(1f32, 26.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 5))
            .unwrap()
            .sqr()
            .unwrap();
        let score = |t: &Tensor| t.broadcast_mul(&ramp)?.sum(D::Minus1)?.sum(D::Minus1);
        let pixel = |t: &Tensor| t.broadcast_mul(&ramp);
        let s = TestTimeAugment::Dihedral.scores(&x, score).unwrap();
        let m = TestTimeAugment::Dihedral.maps(&x, pixel).unwrap();
        assert_eq!(s.dims(), &[2, 3]);
        assert_eq!(m.dims(), x.dims());
        assert!(max_abs_diff(&score(&x).unwrap(), &s) > 1e5);
        for v in DIHEDRAL {
            let xv = v.apply(&x).unwrap();
            let sv = TestTimeAugment::Dihedral.scores(&xv, score).unwrap();
            let rel = max_abs_diff(&sv, &s) / 1e9;
            assert!(rel < 1e-6, "{v:?}: {rel}");
            // Maps follow the input: the map of a view is the view of the map.
            let mv = TestTimeAugment::Dihedral.maps(&xv, pixel).unwrap();
            let rel = max_abs_diff(&mv, &v.apply(&m).unwrap()) / 1e7;
            assert!(rel < 1e-6, "{v:?}: {rel}");
        }
        // The flips alone are invariant under flips but not under a transpose.
        let f = TestTimeAugment::Flips.scores(&x, score).unwrap();
        let ft = TestTimeAugment::Flips
            .scores(&view(false, false, true).apply(&x).unwrap(), score)
            .unwrap();
        let ff = TestTimeAugment::Flips
            .scores(&view(true, true, false).apply(&x).unwrap(), score)
            .unwrap();
        assert!(max_abs_diff(&f, &ff) / 1e9 < 1e-6);
        // (4e4 here; rounding differences are O(10))
        assert!(max_abs_diff(&f, &ft) > 1e4);
        // An identity map comes back unchanged; `None` is one plain call.
        let id = TestTimeAugment::Dihedral
            .maps(&x, |t| Ok(t.clone()))
            .unwrap();
        assert!(max_abs_diff(&id, &x) < 1e-3);
        assert_eq!(
            max_abs_diff(
                &TestTimeAugment::None.maps(&x, pixel).unwrap(),
                &pixel(&x).unwrap()
            ),
            0.0
        );
        assert_eq!(TestTimeAugment::Dihedral.num_views(), 8);
    }

    #[test]
    fn names_round_trip_and_bad_shapes_are_errors() {
        for (t, name) in [
            (TestTimeAugment::None, "\"none\""),
            (TestTimeAugment::Flips, "\"flips\""),
            (TestTimeAugment::Dihedral, "\"dihedral\""),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), name);
            assert_eq!(serde_json::from_str::<TestTimeAugment>(name).unwrap(), t);
            assert_eq!(name.trim_matches('"').parse::<TestTimeAugment>(), Ok(t));
        }
        assert!("rot90"
            .parse::<TestTimeAugment>()
            .unwrap_err()
            .contains("dihedral"));
        let v = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(TestTimeAugment::Flips
            .scores(&v, |t| Ok(t.clone()))
            .is_err());
        // A model whose output shape depends on the orientation (non-square input, per-row
        // output) is caught instead of averaged.
        let x = Tensor::zeros((1, 1, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = TestTimeAugment::Dihedral
            .scores(&x, |t| t.sum(D::Minus1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("test-time view"), "{err}");
    }
}
