//! Pixel-exact comparison with OpenCV, the library the reference code uses for masks, gray
//! conversion and resizing. The fixture (`tests/fixtures/opencv/`) was recorded by
//! `make_fixture.py` with opencv-python-headless 4.6.0 (the Hephaestus era) and 5.0.0.
//! Both versions agree except on polygons crossing the image border, where OpenCV ≥ 4.7
//! clips fill edges to integer border points; we follow the current behaviour there.

use std::path::PathBuf;

use serde::Deserialize;

use super::annotation::Polygon;
use super::array::{ClassMask, Image};
use super::png::Png;
use super::raster::rasterize;
use super::resample::{resize_bilinear, resize_nearest};

#[derive(Deserialize)]
struct Shape {
    class: u8,
    polygon: Vec<f64>,
}

#[derive(Deserialize)]
struct FillCase {
    height: usize,
    width: usize,
    shapes: Vec<Shape>,
    mask: Vec<u64>,
}

#[derive(Deserialize)]
struct GrayCase {
    file: String,
    height: usize,
    width: usize,
    gray: Vec<u64>,
}

#[derive(Deserialize)]
struct ResizeCase {
    height: usize,
    width: usize,
    bilinear: Vec<f32>,
    nearest: Vec<u64>,
}

#[derive(Deserialize)]
struct ResizeSource {
    height: usize,
    width: usize,
    image: Vec<f32>,
    mask: Vec<u64>,
}

#[derive(Deserialize)]
struct Fixture {
    opencv: String,
    fill: Vec<FillCase>,
    gray: Vec<GrayCase>,
    resize: Vec<ResizeCase>,
    resize_source: ResizeSource,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencv")
}

fn load(version: &str) -> Fixture {
    let path = dir().join(format!("opencv_{version}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn unrle(runs: &[u64]) -> Vec<u8> {
    runs.chunks_exact(2)
        .flat_map(|r| std::iter::repeat_n(r[0] as u8, r[1] as usize))
        .collect()
}

fn inside(case: &FillCase) -> bool {
    case.shapes.iter().all(|s| {
        Polygon(s.polygon.clone())
            .integer_vertices()
            .iter()
            .all(|&(x, y)| {
                x >= 0 && y >= 0 && (x as usize) < case.width && (y as usize) < case.height
            })
    })
}

fn check_fill(fixture: &Fixture, only_inside: bool) -> usize {
    let mut checked = 0;
    for (i, case) in fixture.fill.iter().enumerate() {
        if only_inside && !inside(case) {
            continue;
        }
        let polygons: Vec<(u8, Polygon)> = case
            .shapes
            .iter()
            .map(|s| (s.class, Polygon(s.polygon.clone())))
            .collect();
        let mask = rasterize(
            case.height,
            case.width,
            polygons.iter().map(|(c, p)| (*c, p)),
        );
        let expected = unrle(&case.mask);
        let wrong = mask
            .data
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            wrong, 0,
            "OpenCV {} fill case {i}: {wrong} pixels differ",
            fixture.opencv
        );
        checked += 1;
    }
    checked
}

#[test]
fn fill_poly_matches_current_opencv_everywhere() {
    let f = load("5.0.0");
    assert_eq!(check_fill(&f, false), 20);
}

#[test]
fn fill_poly_matches_hephaestus_era_opencv_inside_the_image() {
    let f = load("4.6.0");
    assert!(check_fill(&f, true) >= 4);
}

#[test]
fn gray_matches_imread_grayscale() {
    for version in ["4.6.0", "5.0.0"] {
        let f = load(version);
        assert_eq!(f.gray.len(), 8);
        for case in &f.gray {
            let png = Png::read(&dir().join(&case.file)).unwrap();
            assert_eq!((png.height, png.width), (case.height, case.width));
            assert_eq!(png.gray(), unrle(&case.gray), "{} ({version})", case.file);
            // Transparency (alpha channel or palette tRNS) becomes the validity mask.
            let transparent = ["rgba8.png", "rgba16.png", "graya8.png", "palette_trns.png"];
            assert_eq!(
                png.has_alpha(),
                transparent.contains(&case.file.as_str()),
                "{}",
                case.file
            );
            let invalid = png.valid().iter().filter(|v| !**v).count();
            assert_eq!(invalid > 0, png.alpha().contains(&0), "{}", case.file);
        }
    }
}

#[test]
fn palette_transparency_marks_no_data() {
    // The fixture palette gives index 0 alpha 0 and index 1 alpha 128.
    let png = Png::read(&dir().join("palette_trns.png")).unwrap();
    let alpha = png.alpha();
    assert!(alpha.contains(&0) && alpha.contains(&128) && alpha.contains(&255));
    assert!(alpha.iter().all(|a| [0, 128, 255].contains(a)));
    let valid = png.valid();
    assert!(alpha.iter().zip(&valid).all(|(&a, &v)| v == (a > 0)));
}

#[test]
fn resizing_matches_opencv() {
    let f = load("5.0.0");
    let src = &f.resize_source;
    let image = Image::from_vec(1, src.height, src.width, src.image.clone()).unwrap();
    let mask = ClassMask {
        height: src.height,
        width: src.width,
        data: unrle(&src.mask),
    };
    for case in &f.resize {
        let r = resize_bilinear(&image, case.height, case.width).unwrap();
        let worst = r
            .data
            .iter()
            .zip(&case.bilinear)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "bilinear {}×{}: off by {worst}",
            case.height,
            case.width
        );
        let n = resize_nearest(&mask, case.height, case.width).unwrap();
        assert_eq!(
            n.data,
            unrle(&case.nearest),
            "nearest {}×{}",
            case.height,
            case.width
        );
    }
}
