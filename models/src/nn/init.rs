//! Seeded, order-independent parameter initialisation.
//!
//! Candle's CPU RNG cannot be seeded and `VarBuilder::from_varmap` draws from it, so two
//! builds of the same model differ. [`seeded_var_builder`] returns a `VarBuilder` whose backend
//! creates each missing variable of a [`VarMap`] from a `ChaCha8Rng` keyed by
//! `(seed, full variable name)`: a parameter's initial value depends only on the seed and its
//! name, never on the order in which layers are built or on the thread count. Existing
//! variables are returned unchanged, so a model can be rebuilt on a loaded `VarMap`.
//!
//! Values are drawn in `f64` on the CPU, then converted to the requested dtype and moved to
//! the requested device, so CPU and GPU builds start from the same weights.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A `VarBuilder` over `varmap` that initialises missing variables from `seed` and their name.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededBackend {
        varmap: varmap.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// The RNG that initialises the variable `name` under `seed`.
///
/// ChaCha's 64-bit stream id is taken from a stable (FNV-1a) hash of the name, so every
/// name gets an independent stream of the same seeded key.
pub fn rng_for_name(seed: u64, name: &str) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a64(name.as_bytes()));
    rng
}

/// FNV-1a, 64 bit: stable across platforms and Rust versions (unlike `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Draws `shape.elem_count()` values of `init` from `rng` (in `f64`).
pub fn draw_init(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f64> {
        (0..n)
            .map(|_| mean + std * rng.sample::<f64, _>(StandardNormal))
            .collect()
    };
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> {
        (0..n)
            .map(|_| lo + (up - lo) * rng.random::<f64>())
            .collect()
    };
    match init {
        Init::Const(v) => vec![v; n],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
            }
        }
    }
}

struct SeededBackend {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = vars.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "variable {name} exists with shape {:?}, requested {:?}",
                    var.shape(),
                    s
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = rng_for_name(self.seed, name);
        let values = draw_init(h, &s, &mut rng);
        let tensor = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        match vars.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("variable {name} does not exist and has no shape to create"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|vars| vars.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(varmap: &VarMap, name: &str) -> Vec<f64> {
        let vars = varmap.data().lock().unwrap();
        vars[name]
            .as_tensor()
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn same_seed_same_weights_whatever_the_creation_order() {
        let a = VarMap::new();
        let vb = seeded_var_builder(&a, 7, DType::F32, &Device::Cpu);
        vb.get_with_hints((4, 3), "x.weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        vb.get_with_hints(5, "y.bias", Init::Uniform { lo: -1., up: 1. })
            .unwrap();

        let b = VarMap::new();
        let vb = seeded_var_builder(&b, 7, DType::F32, &Device::Cpu);
        vb.pp("y")
            .get_with_hints(5, "bias", Init::Uniform { lo: -1., up: 1. })
            .unwrap();
        vb.pp("x")
            .get_with_hints((4, 3), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        assert_eq!(values(&a, "x.weight"), values(&b, "x.weight"));
        assert_eq!(values(&a, "y.bias"), values(&b, "y.bias"));

        let c = VarMap::new();
        let vb = seeded_var_builder(&c, 8, DType::F32, &Device::Cpu);
        vb.get_with_hints(5, "y.bias", Init::Uniform { lo: -1., up: 1. })
            .unwrap();
        assert_ne!(values(&a, "y.bias"), values(&c, "y.bias"));
    }

    #[test]
    fn different_names_draw_different_values() {
        let m = VarMap::new();
        let vb = seeded_var_builder(&m, 1, DType::F64, &Device::Cpu);
        let init = Init::Randn {
            mean: 0.,
            stdev: 1.,
        };
        vb.get_with_hints(64, "a", init).unwrap();
        vb.get_with_hints(64, "b", init).unwrap();
        let (a, b) = (values(&m, "a"), values(&m, "b"));
        assert_ne!(a, b);
        // Independent streams: the correlation of two 64-draw samples stays small.
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / 64.0;
        assert!(dot.abs() < 0.5, "streams look correlated: {dot}");
    }

    #[test]
    fn honours_init_hints_dtype_and_existing_vars() {
        let m = VarMap::new();
        let vb = seeded_var_builder(&m, 3, DType::BF16, &Device::Cpu);
        let t = vb.get_with_hints(3, "c", Init::Const(2.5)).unwrap();
        assert_eq!(t.dtype(), DType::BF16);
        assert_eq!(values(&m, "c"), vec![2.5; 3]);

        // Kaiming normal fan-out for a conv weight: std = sqrt(2 / (out·k·k)).
        let shape = (64, 8, 3, 3);
        let init = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanOut,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let vb = seeded_var_builder(&m, 3, DType::F32, &Device::Cpu);
        vb.get_with_hints(shape, "w", init).unwrap();
        let w = values(&m, "w");
        let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
        let expected = (2.0f64 / (64.0 * 9.0)).sqrt();
        assert!((std / expected - 1.0).abs() < 0.05, "{std} vs {expected}");

        let u = Init::Uniform { lo: 2.0, up: 3.0 };
        vb.get_with_hints(1000, "u", u).unwrap();
        assert!(values(&m, "u").iter().all(|v| (2.0..3.0).contains(v)));

        // An existing var is returned unchanged, whatever the hint; a wrong shape is an error.
        let again = vb.get_with_hints(3, "c", Init::Const(9.0)).unwrap();
        assert_eq!(
            again
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
            vec![2.5; 3]
        );
        assert!(vb.get_with_hints(4, "c", Init::Const(0.0)).is_err());
        assert!(vb.contains_tensor("c"));
        assert!(!vb.contains_tensor("missing"));
    }

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
