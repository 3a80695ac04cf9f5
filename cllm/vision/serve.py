"""`cli.py serve` with an image model: POST /v1/images/generations returns PNGs as base64 in JSON.

The request and response follow the shape of OpenAI's image-generation API, where it applies:

    {"n": 4, "class": "7", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "grid": false,
     "response_format": "b64_json"}
    -> {"created": 1700000000, "model": "...", "data": [{"b64_json": "<PNG>", "class": "7"}, ...]}

"class" (a class folder's name; omitted: the model draws one per image) is CLLM's extension; with
"grid": true, "data" holds one PNG of all n images. A text model answers 400 with code
"images_not_supported"; a model without classes refuses "class". Images are generated on the server's
worker threads, under the same admission limits as completions.
"""
from __future__ import annotations

import base64
import time

_FIELDS = {"n", "class", "temperature", "top_k", "top_p", "seed", "grid", "response_format", "model", "size"}


def _parse(body, settings, tok):
    from cllm.serve.server import _is_int, _is_number, check_fields
    from cllm.serve.server import bad_value as bad

    check_fields(body, _FIELDS, "the documentation of /v1/images/generations (cllm/vision/serve.py)")
    if body.get("response_format", "b64_json") not in ("b64_json", None):
        bad("response_format", "only 'b64_json' is supported (the PNG itself, base64-encoded)")
    size = f"{tok.width}x{tok.height}"
    if body.get("size") not in (None, size):
        bad("size", f"this model makes {size} images only")
    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= settings.max_n:
        bad("n", f"'n' must be an integer from 1 to {settings.max_n}")
    temperature = body.get("temperature", 1.0)
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        bad("temperature", "'temperature' must be a number in [0, 2]")
    top_k, top_p, seed = body.get("top_k", 0), body.get("top_p", 1.0), body.get("seed")
    if not _is_int(top_k) or top_k < 0:
        bad("top_k", "'top_k' must be a non-negative integer")
    if not _is_number(top_p) or not 0 < top_p <= 1:
        bad("top_p", "'top_p' must be a number in (0, 1]")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2 ** 63):
        bad("seed", "'seed' must be a non-negative integer or null")
    label = body.get("class")
    if label is not None:
        if not tok.labelled:
            bad("class", "this model was trained without classes; leave out 'class'")
        if str(label) not in tok.classes:
            bad("class", f"unknown class {label!r}; this model knows {', '.join(tok.classes[:30])}")
        label = str(label)
    if not isinstance(body.get("grid", False), bool):
        bad("grid", "'grid' must be true or false")
    return n, label, float(temperature), top_k, float(top_p), seed, body.get("grid", False)


async def image_generations(request):
    """The handler of POST /v1/images/generations (see the module doc)."""
    import asyncio

    from aiohttp import web

    from cllm.generation import SamplingConfig
    from cllm.serve.server import ENGINE, SCHEDULER, SETTINGS, APIError, read_json
    from cllm.vision.sampling import grid as make_grid
    from cllm.vision.sampling import png_bytes, sample_images

    engine, sched = request.app[ENGINE], request.app[SCHEDULER]
    tok = engine.tokenizer
    if tok.kind != "image":
        raise APIError(400, f"this server's model generates text ({tok.kind} tokenizer), not images; use "
                            "POST /v1/completions", code="images_not_supported")
    n, label, temperature, top_k, top_p, seed, as_grid = _parse(await read_json(request), request.app[SETTINGS], tok)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)

    def work():
        engine.warm_up()
        with engine._turns:  # the engine's rule for running kernels on several threads at once
            return sample_images(engine.model, tok, n, sampling, label=label)

    sched.admit()
    await sched.acquire()
    try:
        pixels, labels = await asyncio.get_running_loop().run_in_executor(sched.pool, work)
    finally:
        sched.release()

    def b64(images, **kw):
        return base64.b64encode(png_bytes(make_grid(images, **kw))).decode("ascii")

    if as_grid:
        data = [{"b64_json": b64(pixels), "classes": labels}]
    else:  # each image at its own size, one PNG pixel per pixel
        data = [{"b64_json": b64(p[None], scale=1, pad=0), "class": c} for p, c in zip(pixels, labels)]
    return web.json_response({"created": int(time.time()), "model": engine.model_id, "data": data})
