"""Train the edit U-Net + text encoder (InstructPix2Pix objective, v-prediction, zero-terminal-SNR schedule).

Paper pieces (arXiv 2510.06295 sec. 3, as reconstructed in the project notes):
- hallucination-based data filtering: every training target is scored by the artifact detector M
  and the top `filter_share` (default 15%) by artifact ratio is dropped (`filter_pool`);
- hallucination-aware loss `L = L_LDM + lambda * mean(M(D(x0_hat)))` where x0_hat is the clean
  latent implied by the dual-CFG guided prediction g_theta (three U-Net passes: text+image,
  image only, unconditional), applied to samples with t < `hal_t_max` (`hallucination_aware_loss`).

Choices the paper leaves open (documented in README): lambda 0.5; guidance scales inside the loss
= text 1.5 / image 1.2; t < 400; at most 8 samples per batch get the extra term (cost); M and D
frozen, gradients flow through both into the U-Net; the penalty is the mean soft probability.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from pipeline import mini_architecture as arch
from pipeline import synthedit as se
from pipeline.models import ArtifactDetector
from pipeline.train.common import EMA, Budget, Checkpoint, Postfix, device, progress_bar, seed_everything, train_loop
from pipeline.train.data import edit_size

FAMILY_WEIGHT = {"recolour": 1.6, "remove": 1.3, "add": 1.3, "background": 1.0, "global": 0.8}
PHOTO_WEIGHT = 1.0  # every PhotoEdit triple (`photo:<family>`)
HAL_TEXT_GUIDANCE, HAL_IMAGE_GUIDANCE, HAL_T_MAX, HAL_MAX_SAMPLES = 1.5, 1.2, 400, 8


@dataclass
class Pool:
    """Pre-encoded training triples, grouped by edit size (one batch = one size)."""

    src: list[torch.Tensor]          # per group (N, 4, h, w)
    tgt: list[torch.Tensor]
    ids: list[torch.Tensor]          # (N, 77)
    family: list[np.ndarray]
    artifact_ratio: list[np.ndarray]  # M's score of each target (the filtering criterion)
    has_artifacts: list[np.ndarray]
    keep: list[np.ndarray]           # bool: survives filtering

    def state(self) -> dict:
        return self.__dict__


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(prediction_type="v_prediction", **{k: v for k, v in arch.SCHEDULE.items() if k != "set_alpha_to_one"})


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def render_pool(n: int, offset: int = 0, cache: Path | None = None) -> dict:
    """Training triples rendered at their edit size, grouped by size: {(w, h): dict(src, tgt, text, family, art)}.
    Rendering does not depend on any model, so it can be cached (and done while the autoencoder trains)."""
    if cache is not None and cache.is_file():
        groups = torch.load(cache, weights_only=False)
        if sum(len(g["text"]) for g in groups.values()) == n:
            return groups
    lo, _ = se.SPLITS["train"]
    groups: dict[tuple[int, int], dict] = {}
    bar = progress_bar(n, 0, "render pool")
    for s in range(lo + offset, lo + offset + n):
        ex = se.sample(s)
        w, h = edit_size(ex.source_scene.aspect)
        g = groups.setdefault((w, h), {"src": [], "tgt": [], "text": [], "family": [], "art": []})
        g["src"].append(np.asarray(ex.source(w, h)))
        g["tgt"].append(np.asarray(ex.target(w, h)))
        g["text"].append(ex.instruction)
        g["family"].append(ex.family)
        g["art"].append(ex.has_artifacts)
        bar.update(1)
    bar.close()
    for g in groups.values():
        g["src"], g["tgt"] = np.stack(g["src"]), np.stack(g["tgt"])
    if cache is not None:
        torch.save(groups, cache)
    return groups


def _u8_to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1


def merge_groups(groups: dict, extra: dict) -> dict:
    """Append the triples of `extra` to `groups` (both {size: dict of arrays / lists})."""
    for size, g in extra.items():
        if size not in groups:
            groups[size] = g
            continue
        for k, v in g.items():
            groups[size][k] = np.concatenate([groups[size][k], v]) if isinstance(v, np.ndarray) else [*groups[size][k], *v]
    return groups


@torch.no_grad()
def build_pool(n: int, vae: AutoencoderTiny, tokenizer: CLIPTokenizer, detector: ArtifactDetector | None,
               seed: int = 0, offset: int = 0, batch: int = 64, cache: Path | None = None, photos: int = 0) -> Pool:
    """Render (or load) n SynthEdit training triples plus `photos` PhotoEdit triples (train photos only),
    encode with the frozen autoencoder, optionally score with M."""
    from pipeline.train.photos import edit_triples

    groups = render_pool(n, offset, cache)
    if photos:
        groups = merge_groups(groups, edit_triples(photos, seed))
    n = sum(len(g["text"]) for g in groups.values())
    out = {k: [] for k in ("src", "tgt", "ids", "family", "artifact_ratio", "has_artifacts")}
    bar = progress_bar(n, 0, "encode pool")
    for (w, h), g in sorted(groups.items()):
        src, tgt = [], []
        for i in range(0, len(g["text"]), batch):
            src.append(vae.encode(_u8_to_tensor(g["src"][i:i + batch])).latents)
            tgt.append(vae.encode(_u8_to_tensor(g["tgt"][i:i + batch])).latents)
            bar.update(min(batch, len(g["text"]) - i))
        out["src"].append(torch.cat(src))
        out["tgt"].append(torch.cat(tgt))
        out["ids"].append(tokenize(tokenizer, g["text"]))
        out["family"].append(np.array(g["family"]))
        out["has_artifacts"].append(np.array(g["art"]))
        out["artifact_ratio"].append(np.full(len(g["text"]), np.nan))
    bar.close()
    pool = Pool(**out, keep=[np.ones(len(f), bool) for f in out["family"]])
    return score_pool(pool, vae, detector) if detector is not None else pool


@torch.no_grad()
def score_pool(pool: Pool, vae: AutoencoderTiny, detector: ArtifactDetector, batch: int = 128) -> Pool:
    """M's artifact ratio of every training target, judged on the decoded target latent (what the
    U-Net is taught to produce)."""
    ratios = []
    for tgt in pool.tgt:
        r = [detector.artifact_ratio(vae.decode(tgt[i:i + batch]).sample.clamp(-1, 1)) for i in range(0, len(tgt), batch)]
        ratios.append(torch.cat(r).numpy())
    return Pool(**{**pool.__dict__, "artifact_ratio": ratios})


def filter_pool(pool: Pool, share: float) -> Pool:
    """Hallucination-based data filtering: drop the `share` of targets with the highest artifact ratio
    (by rank, so ties at 0 cannot keep everything)."""
    ratios = np.concatenate(pool.artifact_ratio)
    flat = np.ones(len(ratios), bool)
    flat[np.argsort(-ratios, kind="stable")[: int(round(share * len(ratios)))]] = False
    keep, i = [], 0
    for r in pool.artifact_ratio:
        keep.append(flat[i:i + len(r)])
        i += len(r)
    return Pool(**{**pool.__dict__, "keep": keep})


def v_to_x0(sched: DDPMScheduler, z_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ab = sched.alphas_cumprod.to(z_t.device)[t].view(-1, 1, 1, 1)
    return ab.sqrt() * z_t - (1 - ab).sqrt() * v


def guided_prediction(unet, z_t, t, image_lat, text_emb, uncond_emb, s_text: float, s_image: float):
    """g_theta: IP2P dual classifier-free guidance, three passes (text+image, image only, unconditional)."""
    b = z_t.shape[0]
    x = torch.cat([torch.cat([z_t, image_lat], 1), torch.cat([z_t, image_lat], 1),
                   torch.cat([z_t, torch.zeros_like(image_lat)], 1)])
    emb = torch.cat([text_emb, uncond_emb.expand(b, -1, -1), uncond_emb.expand(b, -1, -1)])
    full, image_only, uncond = unet(x, t.repeat(3), encoder_hidden_states=emb).sample.chunk(3)
    return uncond + s_image * (image_only - uncond) + s_text * (full - image_only)


def hallucination_aware_loss(unet, vae, detector, sched, z_t, t, image_lat, text_emb, uncond_emb,
                             s_text: float = HAL_TEXT_GUIDANCE, s_image: float = HAL_IMAGE_GUIDANCE) -> torch.Tensor:
    """mean M(D(x0_hat)): the soft artifact area of what the guided model would produce from z_t."""
    g = guided_prediction(unet, z_t, t, image_lat, text_emb, uncond_emb, s_text, s_image)
    pixels = vae.decode(v_to_x0(sched, z_t, g, t)).sample
    return detector.probabilities(pixels.clamp(-1, 1)).mean()


def load_frozen(out: Path, dev):
    vae = AutoencoderTiny.from_pretrained(out / "vae").to(dev).eval().requires_grad_(False)
    det_dir = out / "detector"
    det = None
    if det_dir.is_dir() and any(p.suffix == ".safetensors" for p in det_dir.iterdir()):
        det = ArtifactDetector.from_pretrained(det_dir).to(dev).eval().requires_grad_(False)
    return vae, det


def get_pool(args, vae, tokenizer, det) -> Pool:
    from pipeline.train.photos import photo_count

    n_photos = photo_count(args)
    path = Path(args.run_dir) / ("edit_pool.pt" if not n_photos else f"edit_pool_photos{n_photos}.pt")
    n = args.pool
    if path.is_file():
        pool = Pool(**torch.load(path, weights_only=False))
        if len(np.concatenate(pool.family)) == n + n_photos:
            if det is not None and np.isnan(np.concatenate(pool.artifact_ratio)).any():
                pool = score_pool(pool, vae, det)
                torch.save(pool.state(), path)
            return pool
    t0 = time.time()
    pool = build_pool(n, vae, tokenizer, None, seed=args.seed, cache=Path(args.run_dir) / f"edit_renders_{n}.pt",
                      photos=n_photos)
    torch.save(pool.state(), path)
    print(f"edit pool: {n} SynthEdit + {n_photos} PhotoEdit triples in {time.time() - t0:.0f} s")
    if det is not None:
        pool = score_pool(pool, vae, det)
        torch.save(pool.state(), path)
    return pool


def train(args: argparse.Namespace):
    dev = device()
    seed_everything(args.seed)
    out = Path(args.out)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    vae, det = load_frozen(out, dev)
    torch.manual_seed(args.seed)
    text_encoder = arch.text_encoder(tokenizer).to(dev)
    unet = arch.edit_unet().to(dev)
    pool = get_pool(args, vae, tokenizer, det if args.variant in ("filtered", "full") else None)  # plain: M unused
    if args.variant in ("filtered", "full"):
        if det is None:
            raise SystemExit("edit --variant filtered/full needs a trained detector in --out (train `detector` first)")
        pool = filter_pool(pool, args.filter_share)
    use_hal = args.variant == "full" and args.hallucination_weight > 0 and det is not None
    name = f"edit-{args.variant}" if args.init_from else "edit"
    ckpt = Checkpoint(args.run_dir, name)
    freeze_te = getattr(args, "freeze_text_encoder", False)  # keeps the edit-region model's inputs as they are
    text_encoder.requires_grad_(not freeze_te)
    params = [{"params": unet.parameters(), "weight_decay": 1e-2}]
    params += [] if freeze_te else [{"params": text_encoder.parameters(), "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=args.lr)
    ema = EMA(unet, 0.995)
    ema_te = EMA(text_encoder, 0.995)
    state = dict(unet=unet, text_encoder=text_encoder, opt=opt, ema=ema, ema_te=ema_te)
    step, elapsed = 0, 0.0
    if args.resume and ckpt.path.is_file():
        step, elapsed = ckpt.load(**state)
    elif args.init_from and Path(args.init_from).is_dir():  # a model set folder: fine-tune its shipped weights
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(Path(args.init_from) / "unet").state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(Path(args.init_from) / "text_encoder").state_dict())
        ema, ema_te = EMA(unet, 0.995), EMA(text_encoder, 0.995)
        state.update(ema=ema, ema_te=ema_te)
    elif args.init_from:
        Checkpoint(Path(args.init_from).parent.parent, Path(args.init_from).parent.name).load(
            unet=unet, text_encoder=text_encoder, ema=ema, ema_te=ema_te)
    sched = noise_scheduler()
    uncond_ids = tokenize(tokenizer, [""]).to(dev)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 7])
    sizes = [len(f) for f in pool.family]
    weights = [np.array([FAMILY_WEIGHT.get(f, PHOTO_WEIGHT) for f in fam]) * keep for fam, keep in zip(pool.family, pool.keep)]
    group_p = np.array([w.sum() for w in weights])
    group_p = group_p / group_p.sum()
    last: dict[str, torch.Tensor] = {}  # this step's loss terms, for the loss log

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        gi = int(rng.choice(len(sizes), p=group_p))
        idx = rng.choice(sizes[gi], size=args.batch_size, p=weights[gi] / weights[gi].sum())
        idx_t = torch.from_numpy(idx)
        x0 = pool.tgt[gi][idx_t].to(dev)
        img = pool.src[gi][idx_t].to(dev)
        ids = pool.ids[gi][idx_t].to(dev)
        b = x0.shape[0]
        r = torch.from_numpy(rng.random(b)).float().to(dev)
        drop_text = (r < 0.15).view(-1)           # 10% text only + 5% both
        drop_img = ((r >= 0.05) & (r < 0.20)) | (r < 0.05)
        ids = torch.where(drop_text[:, None], uncond_ids.expand(b, -1), ids)
        img_in = img * (~drop_img).float().view(-1, 1, 1, 1)
        emb = text_encoder(ids)[0]
        noise = torch.randn_like(x0)
        t = torch.from_numpy(rng.integers(0, sched.config.num_train_timesteps, b)).long().to(dev)
        z_t = sched.add_noise(x0, noise, t)
        v = unet(torch.cat([z_t, img_in], 1), t, encoder_hidden_states=emb).sample
        loss_ldm = ((v - sched.get_velocity(x0, noise, t)) ** 2).mean()
        loss = loss_ldm
        hal = torch.zeros(())
        if use_hal:
            sel = ((t < HAL_T_MAX) & ~drop_text & ~drop_img).nonzero().flatten()[:HAL_MAX_SAMPLES]
            if len(sel):
                uncond_emb = text_encoder(uncond_ids)[0]
                hal = hallucination_aware_loss(unet, vae, det, sched, z_t[sel], t[sel], img[sel], emb[sel], uncond_emb)
                loss = loss + args.hallucination_weight * hal
        last.update(ldm=loss_ldm, hal=hal)
        return loss, {"loss": (loss_ldm, ".4f"), "hal": (hal, ".4f"), "lr": (opt.param_groups[0]["lr"], ".1e")}

    def on_step(step: int) -> None:
        ema.update(unet)
        ema_te.update(text_encoder)
        log.write(f"{step}\t{budget.elapsed():.0f}\t{last['ldm'].item():.5f}\t{last['hal'].item():.5f}\n")
        if step % 10 == 0:
            log.flush()

    unet.train(), text_encoder.train()
    with open(Path(args.run_dir) / f"{name}.loss.tsv", "a") as log:
        step = train_loop(f"edit ({args.variant})", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                          state=state, batch_loss=batch_loss, clip=[p for g in opt.param_groups for p in g["params"]],
                          on_step=on_step, warmup=0.03 if not args.init_from else 0.0)
    if args.out and not getattr(args, "no_save", False):
        save(out, unet, text_encoder, ema, ema_te, use_ema=getattr(args, "use_ema", True))
    print(f"edit ({args.variant}): {step} steps, {budget.elapsed() / 60:.1f} min")
    return unet, text_encoder


def save(out: Path, unet, text_encoder, ema: EMA, ema_te: EMA, use_ema: bool = True) -> None:
    if use_ema and ema.n > 0:
        ema.copy_to(unet)
        ema_te.copy_to(text_encoder)
    unet.eval().save_pretrained(out / "unet")
    text_encoder.eval().save_pretrained(out / "text_encoder")


def load_checkpoint_models(ckpt_path: Path, tokenizer, use_ema: bool = True):
    """(unet, text_encoder) from a training checkpoint (EMA or raw weights), for evaluation."""
    unet, te = arch.edit_unet(), arch.text_encoder(tokenizer)
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if use_ema:
        unet.load_state_dict(ck["ema"]["shadow"])
        te.load_state_dict(ck["ema_te"]["shadow"])
    else:
        unet.load_state_dict(ck["unet"])
        te.load_state_dict(ck["text_encoder"])
    return unet.eval(), te.eval()
