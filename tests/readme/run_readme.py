"""The README's quick starts, run as a user runs them: each snippet marked
<!-- quickstart LANG FILE --> is saved as FILE, each marked
<!-- quickstart LANG run --> runs in bash, in README order, from a directory
standing for a fresh clone after `make` (its build/ is this build tree), with
none of the build tree's paths set beforehand.

    run_readme.py README BUILD_DIR TMP
"""
import os
import re
import shutil
import subprocess
import sys

MARK = re.compile(r"<!-- quickstart (\w+) (\S+) -->\n```\w*\n(.*?)```", re.S)
# What each language's run block must print: the cache is shared, in order.
EXPECT = {
    "c": ["square(3) = 9", "0 hits, 3 misses", "3 hits, 0 misses", "quickstart.square"],
    "python": ["square(1) = 1, computed by c", "square(4) = 16, computed by python"],
    "lua": ["square(3) = 9, computed by c", "square(4) = 16, computed by python", "square(5) = 25, computed by lua"],
    # the Rust and Go block
    "rust": ["square(6) = 36\n5 hits, 1 misses", "square(7) = 49\n6 hits, 1 misses"],
}


def main(readme, build, tmp):
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    os.symlink(os.path.abspath(build), os.path.join(tmp, "build"))
    # the Rust and Go quick starts build in the sources' bindings/: copied,
    # so the clone stays clean, with the build tree's compiler caches
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shutil.copytree(os.path.join(source, "bindings"), os.path.join(tmp, "bindings"),
                    ignore=shutil.ignore_patterns("target", "*.swg", "python", "lua"))
    snippets = MARK.findall(open(readme).read())
    langs = [lang for lang, what, _ in snippets if what == "run"]
    missing = {"c", "python", "lua"} - set(langs)
    assert not missing, f"no quick start run for {missing}"
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "LUA_PATH", "LUA_CPATH",
            "QUIVER_BUILD", "QUIVER_SOURCE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(os.path.abspath(build)))
    link = os.path.join(os.path.abspath(build), "tests", "link")
    env.update(CARGO_TARGET_DIR=os.path.join(link, "cargo"), GOCACHE=os.path.join(link, "go-cache"),
               GOPATH=os.path.join(link, "gopath"), GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local")
    # nothing may reach the user's default cache: every snippet names its own
    env["QUIVER_CACHE"] = os.path.join(tmp, "default-cache-unused")
    failed = 0
    for lang, what, text in snippets:
        if what != "run":
            with open(os.path.join(tmp, what), "w") as f:
                f.write(text)
            continue
        out = subprocess.run(["bash", "-e", "-c", text], cwd=tmp, env=env, capture_output=True, text=True)
        print(f"--- {lang}\n{text}{out.stdout}{out.stderr}", end="")
        lost = [e for e in EXPECT.get(lang, []) if e not in out.stdout]
        if out.returncode or lost:
            print(f"FAIL: {lang} quick start: exit {out.returncode}, missing {lost}")
            failed += 1
    assert not os.path.exists(env["QUIVER_CACHE"]), "a quick start used the default cache"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
