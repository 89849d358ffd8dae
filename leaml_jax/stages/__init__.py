"""The stages, in pipeline order: name -> module with `run(ctx)` and `outputs(ctx)` (the paths,
relative to the workdir, that the stage writes and that --config.force clears first).
Contracts: shared/DESIGN.md §2. No stage imports another; shared pieces live in `context`
(the run context, the methods) and `artifacts` (atomic files, splits, examples, captions)."""
from leaml_jax.stages import (base, baselines, captions, evaluate, export, prepare, pseudo_qa, qa_generator,
                              relevance, report, vqa)

REGISTRY = {m.__name__.rsplit(".", 1)[-1]: m for m in (
    prepare, base, captions, relevance, qa_generator, pseudo_qa, vqa, baselines, evaluate, report, export)}
