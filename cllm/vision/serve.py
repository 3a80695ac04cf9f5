"""`cli.py serve` with an image model: POST /v1/images/generations returns PNGs as base64 in JSON.

The request and response follow the shape of OpenAI's image-generation API, where it applies:

    {"n": 4, "class": "7", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "grid": false,
     "response_format": "b64_json"}
    -> {"created": 1700000000, "model": "...", "data": [{"b64_json": "<PNG>", "class": "7"}, ...]}

"class" (a class folder's name; omitted: the model draws one per image) is CLLM's extension; with
"grid": true, "data" holds one PNG of all n images. A text model answers 400 with code
"images_not_supported"; a model without classes refuses "class". Images are generated on the server's
worker threads, under the same admission limits as completions; cllm/serve/requests.py checks the request.
"""
from __future__ import annotations

import base64
import time


async def image_generations(request):
    """The handler of POST /v1/images/generations (see the module doc)."""
    import asyncio

    from aiohttp import web

    from cllm.generation import SamplingConfig
    from cllm.serve.requests import APIError, parse_image_request
    from cllm.serve.server import ENGINE, SCHEDULER, SETTINGS, read_json
    from cllm.vision.sampling import grid as make_grid
    from cllm.vision.sampling import png_bytes, sample_images

    engine, sched = request.app[ENGINE], request.app[SCHEDULER]
    tok = engine.tokenizer
    if tok.kind != "image":
        raise APIError(400, f"this server's model generates text ({tok.kind} tokenizer), not images; use "
                            "POST /v1/completions", code="images_not_supported")
    body = await read_json(request)
    n, label, temperature, top_k, top_p, seed, as_grid = parse_image_request(body, request.app[SETTINGS], tok)
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
