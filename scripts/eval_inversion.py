"""Measure DDIM inversion at the model's default step and back against the VAE reconstruction, on 10 held-out scenes.

    .venv/bin/python scripts/eval_inversion.py
"""
import numpy as np, torch
from dragnb.models import load_model, encode_prompt
from dragnb.inversion import encode_image, decode_latent, invert, denoise_latent
from dragnb.config import InversionSettings
from dragnb.images import to_model_tensor, from_model_tensor
from dragnb.scenes import sample_scene, scene_array
m = load_model(device="cpu")
def psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean(); return 10 * np.log10(255**2 / mse) if mse else 99
vals, vae = [], []
for seed in range(900000, 900010):
    sc = sample_scene(seed); img = scene_array(sc, 64)
    x = to_model_tensor(img, (64, 64)); z0 = encode_image(m, x); text = encode_prompt(m, sc.prompt)
    rec = from_model_tensor(decode_latent(m, z0))
    st = m.settings.inversion
    back = denoise_latent(m, invert(m, z0, text, st).zt, text, st)
    vals.append(psnr(from_model_tensor(decode_latent(m, back)), rec)); vae.append(psnr(rec, img))
print("inversion->denoise vs VAE recon PSNR: median %.1f min %.1f dB; VAE recon vs scene: median %.1f dB" % (np.median(vals), min(vals), np.median(vae)))
