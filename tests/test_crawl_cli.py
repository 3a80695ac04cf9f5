"""`python cli.py scrape` end to end, in a subprocess, against a local server: the original C scraper's positional
order, user errors as one line, and resume after a hard kill (SIGKILL) in the middle of a crawl."""
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from crawl_helpers import manifest, page, serve, wait_for

from cllm.commands import parse_command_line, scrape
from cllm.scraper.settings import CrawlSettings

ROOT = Path(__file__).resolve().parents[1]


def _default_sigint():
    # a test run started in the background of a shell inherits SIGINT as ignored, and Python then
    # installs no KeyboardInterrupt handler: give the crawler the Ctrl-C a terminal user has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def run_cli(*args, wait=True):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "cli.py"), "scrape", *map(str, args), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_default_sigint)
    if not wait:
        return proc
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def site_routes(n=6):
    return {"/": page("Home", [f"/p{i}" for i in range(n)]), **{f"/p{i}": page(f"Page {i}") for i in range(n)}}


async def test_seed_positional_order_and_flags(tmp_path):
    async with serve(site_routes()) as site:
        # scrape URL OUT MAX_PAGES MAX_DEPTH DELAY_MS, as the original C program's web_scraper took them
        code, out, err = await run_cli(site.url("/"), tmp_path / "a", 3, 1, 0, "--jitter-ms", 0,
                                       "--min-chars", 20, "--no-progress")
        assert code == 0, err
        assert "kept 3 pages" in out
        assert len(manifest(tmp_path / "a")) == 3
        n_before = len(site.log)
        code, out, err = await run_cli(site.url("/"), tmp_path / "b", "--max-pages", 2, "--max-depth", 0,
                                       "--delay-ms", 0, "--jitter-ms", 0, "--min-chars", 20, "--ignore-robots")
        assert code == 0, err
        assert "warning: --ignore-robots" in err
        assert len(manifest(tmp_path / "b")) == 1  # depth 0: the start page only
    assert site.paths()[n_before:] == ["/"]  # robots.txt not even fetched


async def test_user_errors_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [("not a url", tmp_path / "o1"), ("ftp://example.com/", tmp_path / "o2"),
             ("http://127.0.0.1:9/", tmp_path / "o3"), ("http://127.0.0.1:9/", tmp_path / "file")]
    for url, out in cases:
        code, _, err = await run_cli(url, out, "--retries", 0, "--no-progress")
        assert code == 2, (url, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    code, _, err = await run_cli("http://127.0.0.1:9/", tmp_path / "o4", "--max-pages", 0)
    assert code == 2 and "max-pages" in err


async def test_resume_after_sigkill_refetches_no_saved_page(tmp_path):
    async def slowish(request):
        await asyncio.sleep(0.05)
        return web.Response(text=page("Page " + request.path, [f"/p{i}" for i in range(12)]), content_type="text/html")

    routes = {"/": slowish, **{f"/p{i}": slowish for i in range(12)}}
    out = tmp_path / "out"
    args = ["--max-pages", 100, "--delay-ms", 20, "--jitter-ms", 0, "--min-chars", 20, "--no-progress"]
    async with serve(routes) as site:
        proc = await run_cli(site.url("/"), out, *args, wait=False)
        await wait_for(lambda: len(manifest(out)) >= 4, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        saved_first = {r["url"] for r in manifest(out)}
        n_first = len(site.log)
        assert 4 <= len(saved_first) < 13
        code, stdout, err = await run_cli(site.url("/"), out, *args)
        assert code == 0, err
    refetched = [p for _, p, _ in site.log[n_first:] if site.url(p) in saved_first]
    assert refetched == []
    urls = [r["url"] for r in manifest(out)]
    assert len(urls) == len(set(urls)) == 13
    assert len(os.listdir(out / "pages")) == 13


async def test_ctrl_c_stops_cleanly_with_a_resume_hint(tmp_path):
    out = tmp_path / "out"
    # 31 pages at 200 ms each: the crawl cannot finish between the second page and the signal, even
    # on a busy machine (with 9 pages at 150 ms it once did, and exited 0)
    async with serve(site_routes(30)) as site:
        proc = await run_cli(site.url("/"), out, "--delay-ms", 200, "--jitter-ms", 0, "--min-chars", 20, wait=False)
        await wait_for(lambda: len(manifest(out)) >= 2, timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = await proc.communicate()
        assert proc.returncode == 130
        err = err.decode()
        assert "run the same command again to resume" in err and "Traceback" not in err
        code, stdout, err = await run_cli(site.url("/"), out, "--delay-ms", 0, "--jitter-ms", 0, "--min-chars", 20)
        assert code == 0 and "from earlier runs" in stdout
    assert len(manifest(out)) == 31


def test_every_flag_reaches_the_crawl_setting_of_its_name():
    # the flags are CrawlSettings' fields: a name typed on the command line is the field it sets
    # (--timeout was once the field timeout_s, --ignore-robots the negation of obey_robots)
    typed = {"timeout": ("5", 5.0), "max_redirects": ("2", 2), "allow_domains": ("A.org, .b.org", "A.org, .b.org"),
             "retry_backoff_s": ("0.5", 0.5), "user_agent": ("Bot/1", "Bot/1"), "jitter_ms": ("7", 7)}
    argv = ["http://x.org/", "out", "9"] + [a for name, (text, _) in typed.items()
                                            for a in ("--" + name.replace("_", "-"), text)]
    func, args, kwargs = parse_command_line(scrape, "scrape", argv + ["--ignore-robots", "--no-progress"])
    assert func is scrape.main and args == ["http://x.org/", "out", 9, 2, 1000]
    settings = CrawlSettings(max_pages=args[2], **kwargs)
    for name, (_, value) in typed.items():
        assert getattr(settings, name) == value, name
    assert settings.ignore_robots and not settings.progress and settings.domains == ("a.org", "b.org")
    assert CrawlSettings(**dict(kwargs, allow_domains="")).domains == ()
