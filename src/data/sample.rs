//! The unit every trainer consumes, and the trait every data source implements
//! (patch folders, raw frames, the in-memory synthetic stream).

use anyhow::Result;

use super::array::{ClassMask, Image};

/// Number of entries of the Hephaestus multi-label vector.
pub const NUM_LABELS: usize = 10;

/// `[Deformation, Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified, Low, Medium, High]`
/// (docs/architecture.md §2.1); `Non_Deformation` is all zeros.
pub type LabelVector = [f32; NUM_LABELS];

/// Names of the multi-label entries, in vector order.
pub const LABEL_NAMES: [&str; NUM_LABELS] = [
    "Deformation",
    "Mogi",
    "Dyke",
    "Sill",
    "Spheroid",
    "Earthquake",
    "Unidentified",
    "Low",
    "Medium",
    "High",
];

/// Number of segmentation classes (background + 6 activity types).
pub const NUM_MASK_CLASSES: usize = 7;

/// Names of the mask class ids 0..7.
pub const MASK_CLASS_NAMES: [&str; NUM_MASK_CLASSES] = [
    "background",
    "Mogi",
    "Dyke",
    "Sill",
    "Spheroid",
    "Earthquake",
    "Unidentified",
];

/// One model input with every target the suite trains on.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Stable identifier: the annotation's uniqueID, or a patch file stem such as `123_1`.
    pub id: String,
    /// LiCSAR frame the interferogram belongs to (splits are by frame).
    pub frame_id: String,
    /// Model input, `C × H × W`, values in the representation chosen by the source
    /// (default: `[cos φ, sin φ, coherence]` decoded from the preview, `InputFormat`).
    pub image: Image,
    /// Class-id mask of the same height and width, when known.
    pub mask: Option<ClassMask>,
    pub labels: LabelVector,
    pub caption: Option<String>,
}

/// Random-access collection of samples. `get` must be a pure function of the index
/// (and the source's seed) so that loading is reproducible and parallelisable.
pub trait SampleSource: Send + Sync {
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> Result<Sample>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Another observation of sample `index`'s content — its positive partner for
    /// contrastive pretraining — as model input of the same shape; `draw` picks one when
    /// there are several (a pure function of `(index, draw)`). `None`: no partner.
    fn partner(&self, index: usize, draw: u64) -> Result<Option<Image>> {
        let _ = (index, draw);
        Ok(None)
    }
}
