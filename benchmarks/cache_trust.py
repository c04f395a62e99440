"""What does trusting the device cache cost a connection? Interleaved A/B over loopback sshd.

Each connection trusts entries already in the device cache (the agent and N models, as a
second run of a suite does). Two questions, `--what`:

- `touch`: A stats and hashes each entry once, one remote command each; B does the same and,
  in that command, sets the entry's mtime (`touch -c`, or the device's Python), as used.
- `prefetch`: A does that file by file (touch on, as a run does without prefetch); B looks at
  every file in one go first (`Transport.prefetch`: one listing, one command hashing all), as
  a run now does, then stages them.

Printed: per connection, the time to trust every entry, A and B, median and quartiles of B - A
over interleaved pairs (ABBA order, so drift hits both alike).

Run by hand (needs /usr/sbin/sshd, as for the tests):
    .venv/bin/python benchmarks/cache_trust.py [--what touch|prefetch] [--pairs 20] [--entries 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loopback_sshd import LoopbackSSHD, SSHDMissing  # noqa: E402
from harness.config import parse_profile  # noqa: E402
from harness.transport.ssh import SSHTransport  # noqa: E402


def one_connection(profile: object, files: list[tuple[Path, str]], touch: bool,
                   first: bool = False, prefetch: bool = False) -> float:
    with SSHTransport(profile) as transport:  # type: ignore[arg-type]
        transport.cache.touch_on_use = touch
        transport.cache_dir()  # the folder resolved and made: not part of what is compared
        start = time.perf_counter()
        if prefetch:
            transport.prefetch(files)
        transport.stage_agent()
        for path, sha in files:
            transport.stage(path, sha)
        took = time.perf_counter() - start
        assert first or transport.bytes_pushed == 0, "every entry should already be there"
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("touch", "prefetch"), default="touch")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--entries", type=int, default=5, help="models in the cache besides "
                        "the agent (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            sshd = LoopbackSSHD(root / "sshd").start()
        except SSHDMissing as err:
            print(err, file=sys.stderr)
            return 2
        try:
            data = sshd.profile_data(cache_dir=str(root / "cache"))
            profile = parse_profile(root / "profile.yaml", data)
            files = []
            for i in range(args.entries):
                path = root / f"model{i}.bin"
                path.write_bytes(bytes([i]) * (1 << 20))  # 1 MiB each: hashing is part of it
                files.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
            one_connection(profile, files, True, first=True)  # push everything once
            a: list[float] = []
            b: list[float] = []
            for i in range(args.pairs):
                for is_b in ((False, True) if i % 2 == 0 else (True, False)):
                    if args.what == "touch":
                        took = one_connection(profile, files, touch=is_b)
                    else:
                        took = one_connection(profile, files, touch=True, prefetch=is_b)
                    (b if is_b else a).append(took)
        finally:
            sshd.stop()
    diff = sorted((y - x) * 1e3 for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(diff, n=4)
    print(f"{args.pairs} pairs, agent + {args.entries} entries of 1 MiB trusted per connection")
    names = {"touch": ("no touch", "touch"), "prefetch": ("file by file", "prefetch")}[args.what]
    print(f"A {names[0]}: median {statistics.median(a) * 1e3:.1f} ms per connection")
    print(f"B {names[1]}: median {statistics.median(b) * 1e3:.1f} ms per connection")
    print(f"B - A: median {statistics.median(diff):+.1f} ms per connection "
          f"(quartiles {q[0]:+.1f} to {q[2]:+.1f}, min {diff[0]:+.1f}, max {diff[-1]:+.1f}); "
          f"{statistics.median(diff) / (args.entries + 1):+.2f} ms per entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
