"""Look at a synthetic domain or time its generation:

  python -m leaml_jax.data.datasets.synthetic --show synthetic_endoscopy --out grid.png
  python -m leaml_jax.data.datasets.synthetic --time synthetic_sports --num 20000
"""
import argparse
import time

from leaml_jax.data.datasets.synthetic import (DEFAULT_IMAGE_SIZE, DOMAINS, SPLITS,
                                               generate_examples, show_grid)


def main(argv=None):
  ap = argparse.ArgumentParser(prog="python -m leaml_jax.data.datasets.synthetic",
                               description="Look at a synthetic domain or time its generation.")
  ap.add_argument("--show", choices=DOMAINS, help="write a grid of examples")
  ap.add_argument("--time", choices=DOMAINS, help="time generating --num examples")
  ap.add_argument("--out", default="grid.png")
  ap.add_argument("--num", type=int, default=12)
  ap.add_argument("--split", default="train", choices=SPLITS)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--caption_error_rate", type=float, default=0.15)
  ap.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
  args = ap.parse_args(argv)
  if args.show:
    print(show_grid(args.show, args.out, num=args.num, split=args.split, seed=args.seed,
                    caption_error_rate=args.caption_error_rate, image_size=args.image_size))
  if args.time:
    t0 = time.perf_counter()
    exs = generate_examples(args.time, args.split, args.num, args.seed,
                            args.caption_error_rate, image_size=args.image_size)
    dt = time.perf_counter() - t0
    print(f"{args.time}: {len(exs)} examples in {dt:.1f} s "
          f"({1e3 * dt / max(len(exs), 1):.2f} ms/example)")
  if not (args.show or args.time):
    ap.error("nothing to do: pass --show DOMAIN or --time DOMAIN")


if __name__ == "__main__":
  main()
