//! Text–image retrieval around a trained dual encoder (`train::retrieval`): the embedding
//! [`index`], gathering images to index (a dataset folder, PNGs, folders of PNGs), query
//! embedding and contact sheets of the hits.
//!
//! Layer: above `train` (it loads runs), below `cli`.

pub mod index;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use rayon::prelude::*;

use crate::data::array::Image;
use crate::data::dataset::DatasetDir;
use crate::data::frames::load_input;
use crate::data::loader::LoadOptions;
use crate::data::png::Png;
use crate::data::resample::resize_area;
use crate::data::split::Part;
use crate::synth::gallery::{contact_sheet, Canvas, Tile};
use crate::train::retrieval::{embed_images, LoadedRetrievalRun};
use index::{Entry, Index, ModelRef};

/// Images to index, with what is known about them.
pub struct Gathered {
    pub entries: Vec<Entry>,
    pub images: Vec<Image>,
}

/// Every interferogram of the dataset `dir` (those of split part `part` when given), with
/// its annotation's frame, dates and caption, as model input of `run`.
pub fn gather_dataset(
    dir: &Path,
    part: Option<Part>,
    run: &LoadedRetrievalRun,
) -> Result<Gathered> {
    let ds = DatasetDir::open(dir, LoadOptions::default())
        .with_context(|| format!("--data {}", dir.display()))?;
    let split = match part {
        Some(_) => Some(crate::train::heads::dataset_split(&ds, dir, run.cfg.seed)?),
        None => None,
    };
    let format = run.cfg.data.input_format;
    let size = run.cfg.data.image_size;
    let chosen: Vec<_> = ds
        .annotations
        .annotations
        .iter()
        .filter(|a| match (&split, part) {
            (Some(s), Some(p)) => s.part_of(a.unique_id) == Some(p),
            _ => true,
        })
        .collect();
    let loaded: Vec<(Entry, Image)> = chosen
        .par_iter()
        .map(|a| -> Result<(Entry, Image)> {
            let files = ds.files(a)?;
            let im = load_input(&files, format)
                .with_context(|| format!("{}", files.phase.display()))?
                .image;
            let im = if (im.height, im.width) == (size, size) {
                im
            } else {
                resize_area(&im, size, size)?
            };
            let caption = a.clean_caption();
            Ok((
                Entry {
                    path: files.phase.display().to_string(),
                    id: a.unique_id.to_string(),
                    frame: Some(a.frame_id.clone()),
                    dates: Some(format!("{}_{}", a.primary_date, a.secondary_date)),
                    caption: (!caption.is_empty()).then_some(caption),
                },
                im,
            ))
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        !loaded.is_empty(),
        "--data {}: no interferogram to index{}",
        dir.display(),
        part.map(|p| format!(" in the {p} split"))
            .unwrap_or_default()
    );
    let (entries, images) = loaded.into_iter().unzip();
    Ok(Gathered { entries, images })
}

/// Embeds `gathered` with `run` into an index (in memory).
pub fn build_index(run: &LoadedRetrievalRun, gathered: Gathered, device: &Device) -> Result<Index> {
    let refs: Vec<&Image> = gathered.images.iter().collect();
    let rows = embed_images(&run.model, &refs, 32, device)?;
    let dim = run.model.config().embed_dim;
    Index::new(
        ModelRef {
            run: run.root.display().to_string(),
            id: run.id.clone(),
        },
        dim,
        gathered.entries,
        rows.concat(),
    )
}

/// Side of a contact-sheet thumbnail.
pub const THUMB: usize = 160;

/// A `side × side` thumbnail of a phase preview (nearest sampling, no-data white).
pub fn thumbnail(path: &Path, side: usize) -> Result<Canvas> {
    let png = Png::read(path)?;
    let rgb = png.rgb8();
    let valid = png.valid();
    let mut c = Canvas::new(side, side, [255, 255, 255]);
    let scale = png.width.max(png.height) as f64 / side as f64;
    for y in 0..side {
        for x in 0..side {
            let sx = ((x as f64 + 0.5) * scale) as usize;
            let sy = ((y as f64 + 0.5) * scale) as usize;
            if sx < png.width && sy < png.height {
                let i = sy * png.width + sx;
                if valid[i] {
                    let d = 3 * (y * side + x);
                    c.rgb[d..d + 3].copy_from_slice(&rgb[3 * i..3 * i + 3]);
                }
            }
        }
    }
    Ok(c)
}

/// Writes a contact sheet of `hits` (rank, score, entry) to `out`: the previews with
/// "#rank score" and the caption (else the path) under each. An unreadable preview is drawn
/// grey with its error as caption.
pub fn write_sheet(hits: &[(usize, f32, &Entry)], out: &Path) -> Result<()> {
    let tiles: Vec<Tile> = hits
        .iter()
        .map(|(rank, score, e)| {
            let (image, note) = match thumbnail(Path::new(&e.path), THUMB) {
                Ok(c) => (c, None),
                Err(err) => (
                    Canvas::new(THUMB, THUMB, [200, 200, 200]),
                    Some(format!("{err:#}")),
                ),
            };
            let text = note.unwrap_or_else(|| {
                e.caption.clone().unwrap_or_else(|| {
                    Path::new(&e.path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
            });
            Tile {
                image,
                title: format!("#{rank}  {score:.3}  {}", e.id),
                caption: text,
            }
        })
        .collect();
    let sheet = contact_sheet(&tiles, 5.min(tiles.len()).max(1))?;
    sheet
        .write(out)
        .with_context(|| format!("--sheet {}", out.display()))
}
