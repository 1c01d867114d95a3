r"""Two builds side by side: one benchmark command run alternately in two source trees.

  python benchmarks/ab_rounds.py --before /tmp/jf_main --after . --rounds 5 \
      --pattern 'median ([0-9.]+) ms' -- \
      python benchmarks/train_step.py --config configs/default.py --steps 20

Or one tree with two settings: `--before_args` / `--after_args` are appended to the
command of each side. Each round runs the command once in each tree (PYTHONPATH set to the tree, working
directory the tree), in alternating order (before-after, then after-before), so that
both meet the same load; `--pattern`'s first group is read off each run's output as a
time (lower is better). Prints every round's two figures and their ratio before / after,
and the median ratio: the speed-up of `--after`. Make the "before" tree with e.g.
`git worktree add --detach /tmp/jf_main main`.
"""

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys


def run_once(tree: str, command: list[str], pattern: str) -> float:
  env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
  done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                        check=False)
  output = done.stdout + done.stderr
  found = re.search(pattern, output)
  if done.returncode or not found:
    sys.exit(f"ab_rounds: error: {' '.join(command)} in {tree} exited {done.returncode} "
             f"without a match for {pattern!r}; its output ends:\n{output[-2000:]}")
  return float(found.group(1).replace(",", ""))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--before", default=".", help="source tree of the reference build")
  p.add_argument("--after", default=".", help="source tree of the new build")
  p.add_argument("--before_args", default="", help="more arguments for the reference run")
  p.add_argument("--after_args", default="", help="more arguments for the new run (the "
                 "same tree with two settings: --before_args=--x=a --after_args=--x=b)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--pattern", required=True, help="regex; group 1 = the time to compare")
  p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
  args = p.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    p.error("no command given after --")
  ratios = []
  for r in range(args.rounds):
    order = ("before", "after") if r % 2 == 0 else ("after", "before")
    got = {name: run_once(getattr(args, name),
                          command + shlex.split(getattr(args, f"{name}_args")), args.pattern)
           for name in order}
    ratios.append(got["before"] / got["after"])
    print(f"round {r + 1}/{args.rounds} ({order[0]} first): before {got['before']:g}, "
          f"after {got['after']:g}, before/after {ratios[-1]:.3f}", flush=True)
  print(f"median before/after over {args.rounds} rounds: {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
