//! Files compiled into the binary so that no command depends on what the host has installed.

/// DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`): the one font used
/// for plots and contact sheets (plotters' `ab_glyph` backend, or `ab_glyph` directly).
pub const FONT_TTF: &[u8] = include_bytes!("assets/DejaVuSans.ttf");
