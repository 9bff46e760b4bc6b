//! Frame geometry shared by every synthetic signal: a regular grid of `height × width`
//! pixels of `pixel_m` metres, row 0 at the top (north), column 0 at the left (west).
//! Surface coordinates are east/north in metres relative to the frame centre, so a
//! source placed at `(0, 0)` sits in the middle of the frame.

/// Size and pixel spacing of a synthetic frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub width: usize,
    pub height: usize,
    /// Ground pixel spacing in metres (Hephaestus previews: ≈ 370 m).
    pub pixel_m: f64,
}

impl Geometry {
    pub fn new(width: usize, height: usize, pixel_m: f64) -> Self {
        Self {
            width,
            height,
            pixel_m,
        }
    }

    pub fn len(&self) -> usize {
        self.width * self.height
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row-major index of pixel `(row, col)`.
    pub fn index(&self, row: usize, col: usize) -> usize {
        row * self.width + col
    }

    /// East coordinate (m) of the centre of column `col`.
    pub fn east(&self, col: usize) -> f64 {
        (col as f64 + 0.5 - self.width as f64 / 2.0) * self.pixel_m
    }

    /// North coordinate (m) of the centre of row `row` (row 0 is the northern edge).
    pub fn north(&self, row: usize) -> f64 {
        (self.height as f64 / 2.0 - row as f64 - 0.5) * self.pixel_m
    }

    /// Fractional pixel position `(col, row)` of a surface point, for placing polygons.
    pub fn pixel_of(&self, east: f64, north: f64) -> (f64, f64) {
        (
            east / self.pixel_m + self.width as f64 / 2.0,
            self.height as f64 / 2.0 - north / self.pixel_m,
        )
    }

    /// East and north coordinates of every pixel centre, row-major.
    pub fn surface_points(&self) -> (Vec<f64>, Vec<f64>) {
        let mut e = Vec::with_capacity(self.len());
        let mut n = Vec::with_capacity(self.len());
        for row in 0..self.height {
            let north = self.north(row);
            for col in 0..self.width {
                e.push(self.east(col));
                n.push(north);
            }
        }
        (e, n)
    }
}

/// A row-major scalar field over a [`Geometry`] (phase, elevation, coherence, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub geometry: Geometry,
    pub data: Vec<f32>,
}

impl Field {
    pub fn zeros(geometry: Geometry) -> Self {
        Self {
            geometry,
            data: vec![0.0; geometry.len()],
        }
    }

    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.data[self.geometry.index(row, col)]
    }

    /// Bilinear interpolation of this coarse field onto `target`, node `(r, c)` sitting at
    /// target pixel `(factor·r, factor·c)`. Panics unless the nodes cover the target
    /// (`(width − 1)·factor ≥ target.width − 1`, likewise for the height).
    pub fn upsample(&self, factor: usize, target: Geometry) -> Field {
        let g = self.geometry;
        assert!(
            factor >= 1
                && g.width >= 1
                && g.height >= 1
                && (g.width - 1) * factor + 1 >= target.width
                && (g.height - 1) * factor + 1 >= target.height,
            "upsample: {}×{} nodes ×{factor} do not cover {}×{}",
            g.width,
            g.height,
            target.width,
            target.height
        );
        let f = factor as f32;
        // Per target column: left node and weight.
        let cols: Vec<(usize, f32)> = (0..target.width)
            .map(|x| {
                let c = (x / factor).min(g.width.saturating_sub(2));
                (c, (x as f32 - (c * factor) as f32) / f)
            })
            .collect();
        let mut out = Field::zeros(target);
        for y in 0..target.height {
            let r = (y / factor).min(g.height.saturating_sub(2));
            let ty = (y as f32 - (r * factor) as f32) / f;
            let r1 = (r + 1).min(g.height - 1);
            let (top, bottom) = (
                &self.data[r * g.width..(r + 1) * g.width],
                &self.data[r1 * g.width..(r1 + 1) * g.width],
            );
            let row = &mut out.data[y * target.width..(y + 1) * target.width];
            for (o, &(c, tx)) in row.iter_mut().zip(&cols) {
                let c1 = (c + 1).min(g.width - 1);
                let a = top[c] + (top[c1] - top[c]) * tx;
                let b = bottom[c] + (bottom[c1] - bottom[c]) * tx;
                *o = a + (b - a) * ty;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_centres_are_symmetric_about_the_frame_centre() {
        let g = Geometry::new(4, 2, 100.0);
        assert_eq!(g.east(0), -150.0);
        assert_eq!(g.east(3), 150.0);
        assert_eq!(g.north(0), 50.0);
        assert_eq!(g.north(1), -50.0);
        assert_eq!(g.pixel_of(g.east(2), g.north(1)), (2.5, 1.5));
        let (e, n) = g.surface_points();
        assert_eq!((e[5], n[5]), (g.east(1), g.north(1)));
    }

    #[test]
    fn upsample_reproduces_planes_and_the_nodes() {
        // A plane is reproduced exactly by bilinear interpolation; nodes keep their value.
        let coarse_g = Geometry::new(5, 4, 200.0);
        let mut coarse = Field::zeros(coarse_g);
        for r in 0..4 {
            for c in 0..5 {
                coarse.data[coarse_g.index(r, c)] = 3.0 * c as f32 - 2.0 * r as f32 + 1.0;
            }
        }
        let target = Geometry::new(9, 7, 100.0);
        let fine = coarse.upsample(2, target);
        for y in 0..7 {
            for x in 0..9 {
                let want = 1.5 * x as f32 - 1.0 * y as f32 + 1.0;
                assert!((fine.get(y, x) - want).abs() < 1e-5, "({y}, {x})");
            }
        }
        assert_eq!(fine.get(4, 6), coarse.get(2, 3));
        // Factor 1 is the identity; too few nodes is a panic.
        assert_eq!(coarse.upsample(1, coarse_g), coarse);
        let r = std::panic::catch_unwind(|| coarse.upsample(2, Geometry::new(10, 7, 100.0)));
        assert!(r.is_err());
    }
}
