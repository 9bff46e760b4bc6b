//! Polygons → class-id masks, pixel for pixel what the reference code gets from
//! `cv.fillPoly(mask, [int_points], class_id)` (OpenCV ≥ 4.6, 8-connected, no shift).
//!
//! Which pixels OpenCV sets, and so which pixels this module sets:
//! - vertices are truncated toward zero first (`int(x)` in the reference code);
//! - every edge is drawn as an 8-connected Bresenham line (so the outline, horizontal edges
//!   and the bottom vertex rows are always set), clipped to the image;
//! - the interior is filled scanline by scanline: on row `y` the non-horizontal edges with
//!   `y0 ≤ y < y1` are intersected in 16.16 fixed point (`x = x0 + (y − y0)·dx`, `dx`
//!   truncated), sorted, paired even–odd, and each pair fills columns `ceil(xl)..=floor(xr)`;
//! - edges crossing the image border are first clipped to it (OpenCV's `clipLine`, which
//!   moves the clipped end to an integer pixel), then extended back to their original rows.
//!
//! Polygons are drawn in order onto one mask, so where they overlap the later polygon wins
//! (the reference sums per-polygon masks instead, which turns Mogi 1 + Sill 3 into a bogus
//! Spheroid 4; we do not copy that). Checked against OpenCV 4.6 and 5.0 on random polygons,
//! including ones crossing the border: `tests/fixtures/opencv/`.

use super::annotation::{Annotation, Polygon};
use super::array::ClassMask;

const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;

/// Fills one polygon with `value` (later calls overwrite earlier ones).
pub fn fill_polygon(mask: &mut ClassMask, vertices: &[(i64, i64)], value: u8) {
    let edges = collect_edges(mask, vertices, value);
    fill_edges(mask, edges, value);
}

/// Draws `(class id, polygon)` pairs in order onto a zero mask of the given size.
pub fn rasterize<'a>(
    height: usize,
    width: usize,
    polygons: impl IntoIterator<Item = (u8, &'a Polygon)>,
) -> ClassMask {
    let mut mask = ClassMask::zeros(height, width);
    for (class, polygon) in polygons {
        fill_polygon(&mut mask, &polygon.integer_vertices(), class);
    }
    mask
}

/// The class-id mask of an annotation on a `height × width` frame.
pub fn annotation_mask(annotation: &Annotation, height: usize, width: usize) -> ClassMask {
    rasterize(height, width, annotation.class_polygons())
}

/// A non-horizontal edge: rows `y0..y1` (exclusive), x at row `y0` and its per-row step,
/// both in 16.16 fixed point.
#[derive(Debug, Clone, Copy)]
struct Edge {
    y0: i64,
    y1: i64,
    x: i64,
    dx: i64,
}

impl Edge {
    fn x_at(&self, y: i64) -> i64 {
        self.x + (y - self.y0) * self.dx
    }
}

fn outside(mask: &ClassMask, p: (i64, i64)) -> bool {
    p.0 < 0 || p.1 < 0 || p.0 >= mask.width as i64 || p.1 >= mask.height as i64
}

/// Draws the outline and returns the edges to fill (OpenCV's `CollectPolyEdges`).
fn collect_edges(mask: &mut ClassMask, vertices: &[(i64, i64)], value: u8) -> Vec<Edge> {
    let mut edges = Vec::with_capacity(vertices.len());
    let Some(&last) = vertices.last() else {
        return edges;
    };
    let mut p0 = last;
    for &p1 in vertices {
        draw_line(mask, p0, p1, value);
        // The fill edge runs through the clipped (integer) end points when the edge leaves
        // the image; its rows stay those of the original edge.
        let (mut c0, mut c1) = (p0, p1);
        let (mut y_ref0, mut y_ref1) = (p0.1, p1.1);
        if outside(mask, p0) || outside(mask, p1) {
            clip_line(mask.width as i64, mask.height as i64, &mut c0, &mut c1);
            if c0.1 != c1.1 {
                y_ref0 = c0.1;
                y_ref1 = c1.1;
            }
        }
        if p0.1 != p1.1 {
            let (x0, x1) = (c0.0 << XY_SHIFT, c1.0 << XY_SHIFT);
            let dx = (x1 - x0) / (y_ref1 - y_ref0);
            let edge = if p0.1 < p1.1 {
                Edge {
                    y0: p0.1,
                    y1: p1.1,
                    x: x0 + (p0.1 - y_ref0) * dx,
                    dx,
                }
            } else {
                Edge {
                    y0: p1.1,
                    y1: p0.1,
                    x: x1 + (p1.1 - y_ref1) * dx,
                    dx,
                }
            };
            edges.push(edge);
        }
        p0 = p1;
    }
    edges
}

/// Even–odd scanline fill of the edges (OpenCV's `FillEdgeCollection`; its incremental
/// `x += dx` is exact integer arithmetic, so evaluating `x0 + k·dx` per row is identical).
fn fill_edges(mask: &mut ClassMask, mut edges: Vec<Edge>, value: u8) {
    if edges.len() < 2 {
        return;
    }
    let (w, h) = (mask.width as i64, mask.height as i64);
    let y_min = edges.iter().map(|e| e.y0).min().unwrap_or(0);
    let y_max = edges.iter().map(|e| e.y1).max().unwrap_or(0);
    let x_ends = edges.iter().flat_map(|e| [e.x, e.x_at(e.y1)]);
    let (x_min, x_max) = x_ends.fold((i64::MAX, i64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if y_max < 0 || y_min >= h || x_max < 0 || x_min >= (w << XY_SHIFT) {
        return;
    }
    edges.sort_by_key(|e| e.y0);
    let mut next = 0;
    let mut active: Vec<Edge> = Vec::new();
    let mut xs: Vec<i64> = Vec::new();
    let first_row = y_min.max(0);
    for y in first_row..y_max.min(h) {
        active.retain(|e| e.y1 > y);
        while next < edges.len() && edges[next].y0 <= y {
            if edges[next].y1 > y {
                active.push(edges[next]);
            }
            next += 1;
        }
        xs.clear();
        xs.extend(active.iter().map(|e| e.x_at(y)));
        xs.sort_unstable();
        let row = &mut mask.data[(y as usize) * mask.width..(y as usize + 1) * mask.width];
        for pair in xs.chunks_exact(2) {
            let x1 = (pair[0] + XY_ONE - 1) >> XY_SHIFT;
            let x2 = pair[1] >> XY_SHIFT;
            if x1 < w && x2 >= 0 {
                let (x1, x2) = (x1.max(0), x2.min(w - 1));
                if x1 <= x2 {
                    row[x1 as usize..=x2 as usize].fill(value);
                }
            }
        }
    }
}

/// OpenCV's `clipLine`: clips the segment to `[0, w−1] × [0, h−1]` in place (with its
/// double-precision intersection, truncated), returning whether any part is inside.
fn clip_line(w: i64, h: i64, p1: &mut (i64, i64), p2: &mut (i64, i64)) -> bool {
    if w <= 0 || h <= 0 {
        return false;
    }
    let (right, bottom) = (w - 1, h - 1);
    let code_x = |x: i64| i32::from(x < 0) + i32::from(x > right) * 2;
    let code = |p: (i64, i64)| code_x(p.0) + i32::from(p.1 < 0) * 4 + i32::from(p.1 > bottom) * 8;
    let (mut c1, mut c2) = (code(*p1), code(*p2));
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        let step = |num: i64, slope_num: i64, slope_den: i64| -> i64 {
            (num as f64 * slope_num as f64 / slope_den as f64) as i64
        };
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            p1.0 += step(a - p1.1, p2.0 - p1.0, p2.1 - p1.1);
            p1.1 = a;
            c1 = code_x(p1.0);
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            p2.0 += step(a - p2.1, p2.0 - p1.0, p2.1 - p1.1);
            p2.1 = a;
            c2 = code_x(p2.0);
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                p1.1 += step(a - p1.0, p2.1 - p1.1, p2.0 - p1.0);
                p1.0 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                p2.1 += step(a - p2.0, p2.1 - p1.1, p2.0 - p1.0);
                p2.0 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2) == 0
}

/// An 8-connected Bresenham line from left to right (OpenCV's `LineIterator` with
/// `leftToRight`), clipped to the mask.
fn draw_line(mask: &mut ClassMask, mut p1: (i64, i64), mut p2: (i64, i64), value: u8) {
    if (outside(mask, p1) || outside(mask, p2))
        && !clip_line(mask.width as i64, mask.height as i64, &mut p1, &mut p2)
    {
        return;
    }
    let (mut dx, mut dy) = (p2.0 - p1.0, p2.1 - p1.1);
    let (mut x, mut y) = p1;
    if dx < 0 {
        dx = -dx;
        dy = -dy;
        (x, y) = p2;
    }
    let y_dir = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    // Always step along the major axis; step along the minor one when `err` < 0.
    let vertical = dy > dx;
    let (major, minor) = if vertical {
        ((0, y_dir), (1, 0))
    } else {
        ((1, 0), (0, y_dir))
    };
    if vertical {
        std::mem::swap(&mut dx, &mut dy);
    }
    let mut err = dx - 2 * dy;
    for _ in 0..=dx {
        mask.set(y as usize, x as usize, value);
        let minor_step = err < 0;
        err += -2 * dy + if minor_step { 2 * dx } else { 0 };
        x += major.0;
        y += major.1;
        if minor_step {
            x += minor.0;
            y += minor.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(h: usize, w: usize, shapes: &[(&[(i64, i64)], u8)]) -> ClassMask {
        let mut m = ClassMask::zeros(h, w);
        for (v, c) in shapes {
            fill_polygon(&mut m, v, *c);
        }
        m
    }

    fn rows(m: &ClassMask) -> Vec<String> {
        (0..m.height)
            .map(|y| {
                (0..m.width)
                    .map(|x| char::from(b'0' + m.get(y, x)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn triangle_includes_outline_and_vertices() {
        // Hand-checked: edges (0,0)-(6,0) and (0,0)-(0,6) are drawn, the hypotenuse
        // (6,0)-(0,6) is the 8-connected diagonal, and the interior below it is filled.
        let m = draw(8, 8, &[(&[(0, 0), (6, 0), (0, 6)], 1)]);
        assert_eq!(
            rows(&m),
            vec![
                "11111110", "11111100", "11111000", "11110000", "11100000", "11000000", "10000000",
                "00000000"
            ]
        );
    }

    #[test]
    fn concave_polygon_leaves_its_notch_empty() {
        // A "U": the notch x in 3..=4, y in 0..=3 must stay empty.
        let u = [
            (1, 0),
            (2, 0),
            (2, 4),
            (5, 4),
            (5, 0),
            (6, 0),
            (6, 6),
            (1, 6),
        ];
        let m = draw(8, 8, &[(&u, 2)]);
        assert_eq!(
            rows(&m),
            vec![
                "02200220", "02200220", "02200220", "02200220", "02222220", "02222220", "02222220",
                "00000000"
            ]
        );
    }

    #[test]
    fn polygon_crossing_the_border_is_clipped() {
        // A square from (-3,-3) to (2,2): only the in-image part 0..=2 is set, no wrap.
        let m = draw(5, 5, &[(&[(-3, -3), (2, -3), (2, 2), (-3, 2)], 3)]);
        assert_eq!(rows(&m), vec!["33300", "33300", "33300", "00000", "00000"]);
        // Entirely outside: nothing.
        let m = draw(5, 5, &[(&[(10, 10), (12, 10), (12, 12)], 3)]);
        assert!(m.data.iter().all(|&v| v == 0));
    }

    #[test]
    fn later_polygon_wins_without_summing_ids() {
        let a = [(0, 0), (4, 0), (4, 4), (0, 4)];
        let b = [(2, 2), (6, 2), (6, 6), (2, 6)];
        let m = draw(7, 7, &[(&a, 1), (&b, 3)]);
        assert_eq!(m.get(3, 3), 3, "overlap takes the later id, not 1 + 3 = 4");
        assert_eq!(m.get(1, 1), 1);
        assert_eq!(m.get(5, 5), 3);
        assert!(m.data.iter().all(|&v| v == 0 || v == 1 || v == 3));
        let m = draw(7, 7, &[(&b, 3), (&a, 1)]);
        assert_eq!(m.get(3, 3), 1);
    }

    #[test]
    fn degenerate_polygons_do_not_panic() {
        let m = draw(4, 4, &[(&[(1, 1)], 5)]);
        assert_eq!(m.get(1, 1), 5);
        let m = draw(4, 4, &[(&[(0, 1), (3, 1)], 5)]);
        assert_eq!(rows(&m)[1], "5555");
        let m = draw(4, 4, &[(&[], 5)]);
        assert!(m.data.iter().all(|&v| v == 0));
        let big = [
            (-10_000_000, -10_000_000),
            (10_000_000, -10_000_000),
            (0, 10_000_000),
        ];
        let m = draw(4, 4, &[(&big, 6)]);
        assert!(m.data.iter().all(|&v| v == 6));
    }
}
