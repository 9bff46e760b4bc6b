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
}
