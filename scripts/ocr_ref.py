"""PP-OCR (RapidOCR 1.4.4) reference inputs/outputs with numpy + ONNX Runtime only (no OpenCV).

Reimplements the parts of rapidocr_onnxruntime 1.4.4 that matter for one grayscale page:
  * load: grayscale -> BGR by channel replication (LoadImage: cv2.COLOR_GRAY2BGR)
  * det (ch_ppocr_det/utils.py DetPreProcess): (x/255 - 0.5)/0.5 per channel, HWC -> NCHW.
    RapidOCR resizes so the short side is >= 736 and both sides are multiples of 32; here the
    image stays at its native size and is zero-padded bottom/right (after normalisation) to a
    multiple of 32 instead.
  * boxes (DBPostProcess, simplified, axis-aligned): prob > 0.3, 2x2 dilation as cv2.dilate
    (dst[y,x] = max src[y-1..y, x-1..x]), 8-connected components, bounding box, mean prob over the
    component's pixels >= 0.5 (like the 'slow' score; lines on this page are curved), unclip by d = w*h*1.6 / (2*(w+h)), round, clip to the image.
  * crop (get_rotate_crop_image): for an axis-aligned box the perspective warp is an integer
    translation, i.e. img[y0:y1, x0:x1].
  * cls (ch_ppocr_cls resize_norm_img, shape 3x48x192) and rec (ch_ppocr_rec resize_norm_img,
    3x48xW, W = int(48 * max(320/48, w/h)) for a batch of one): resize to height 48 and width
    min(ceil(48*w/h), W) with cv2.INTER_LINEAR semantics (half-pixel centres, no antialiasing,
    edge clamp; result rounded to uint8 like cv2 does for uint8 images), x/255, -0.5, /0.5,
    CHW, zero-padded on the right to the full width.
"""

from __future__ import annotations

import math

import numpy as np

DET_THRESH = 0.3
BOX_THRESH = 0.5
UNCLIP_RATIO = 1.6
MIN_SIZE = 3


def to_bgr(gray_or_rgb: np.ndarray) -> np.ndarray:
    if gray_or_rgb.ndim == 2:
        return np.repeat(gray_or_rgb[:, :, None], 3, axis=2)
    return gray_or_rgb[:, :, ::-1].copy()


def det_input(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    x = (bgr.astype(np.float32) * np.float32(1 / 255.0) - np.float32(0.5)) / np.float32(0.5)
    H, W = -(-h // 32) * 32, -(-w // 32) * 32
    out = np.zeros((1, 3, H, W), np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    return out


def _components(mask: np.ndarray, prob: np.ndarray) -> list[tuple[int, int, int, int, float]]:
    """8-connected components of a bool mask, as inclusive (x0, y0, x1, y1) plus the mean of prob
    over the component's pixels, in scan order."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    boxes = []
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys.tolist(), xs.tolist()):
        if seen[y, x]:
            continue
        seen[y, x] = True
        stack = [(y, x)]
        total, count = 0.0, 0
        x0 = x1 = x
        y0 = y1 = y
        while stack:
            cy, cx = stack.pop()
            total += float(prob[cy, cx])
            count += 1
            x0, x1, y0, y1 = min(x0, cx), max(x1, cx), min(y0, cy), max(y1, cy)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append((x0, y0, x1, y1, total / count))
    return boxes


def boxes_from_prob(prob: np.ndarray, h: int, w: int) -> list[tuple[int, int, int, int]]:
    """prob: [H, W] det output; returns crop boxes (x0, y0, x1, y1), x1/y1 exclusive, reading order."""
    p = prob[:h, :w]
    seg = p > DET_THRESH
    dil = seg.copy()
    dil[1:, :] |= seg[:-1, :]
    dil[:, 1:] |= seg[:, :-1]
    dil[1:, 1:] |= seg[:-1, :-1]
    out = []
    for x0, y0, x1, y1, score in _components(dil, p):
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < MIN_SIZE:
            continue
        if score < BOX_THRESH:
            continue
        d = bw * bh * UNCLIP_RATIO / (2 * (bw + bh))
        if min(bw, bh) + 2 * d < MIN_SIZE + 2:
            continue
        X0 = int(np.clip(round(x0 - d), 0, w - 1))
        Y0 = int(np.clip(round(y0 - d), 0, h - 1))
        X1 = int(np.clip(round(x1 + d), 0, w - 1))
        Y1 = int(np.clip(round(y1 + d), 0, h - 1))
        if X1 - X0 <= 3 or Y1 - Y0 <= 3:
            continue
        out.append((X0, Y0, X1, Y1))
    # sorted_boxes: top to bottom, then left to right for boxes within 10 px vertically
    out.sort(key=lambda b: (b[1], b[0]))
    for i in range(len(out) - 1):
        for j in range(i, -1, -1):
            if abs(out[j + 1][1] - out[j][1]) < 10 and out[j + 1][0] < out[j][0]:
                out[j], out[j + 1] = out[j + 1], out[j]
            else:
                break
    return out


def resize_linear(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """cv2.resize(img, (out_w, out_h), interpolation=INTER_LINEAR) semantics for uint8 HWC, in float,
    rounded back to uint8."""
    h, w = img.shape[:2]

    def coords(n_out: int, n_in: int):
        scale = n_in / n_out
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        f = src - i0
        i0 = np.minimum(i0, n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, f

    y0, y1, fy = coords(out_h, h)
    x0, x1, fx = coords(out_w, w)
    a = img.astype(np.float64)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bot = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def resize_norm(crop: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    h, w = crop.shape[:2]
    ratio = w / float(h)
    resized_w = img_w if math.ceil(img_h * ratio) > img_w else int(math.ceil(img_h * ratio))
    r = resize_linear(crop, resized_w, img_h).astype(np.float32)
    r = r.transpose(2, 0, 1) / np.float32(255)
    r -= np.float32(0.5)
    r /= np.float32(0.5)
    out = np.zeros((3, img_h, img_w), np.float32)
    out[:, :, :resized_w] = r
    return out[None]


def cls_input(crop: np.ndarray) -> np.ndarray:
    return resize_norm(crop, 48, 192)


def rec_input(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    max_wh_ratio = max(320 / 48, w / float(h))
    return resize_norm(crop, 48, int(48 * max_wh_ratio))


def ctc_decode(probs: np.ndarray, charset: list[str]) -> tuple[str, float]:
    """probs: [T, C]; charset[0] is the CTC blank. Returns (text, mean confidence)."""
    idx = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    keep = np.ones(len(idx), bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != 0
    text = "".join(charset[i] for i in idx[keep])
    return text, float(conf[keep].mean()) if keep.any() else 0.0
