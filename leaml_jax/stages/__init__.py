"""Stage registry: name -> run(ctx). Order and contracts: shared/DESIGN.md §2."""
from leaml_jax.stages import adapt, base, captions, evaluate, prepare, report

REGISTRY = {
    "prepare": prepare.run,
    "base": base.run,
    "captions": captions.run,
    "relevance": adapt.run_relevance,
    "qa_generator": adapt.run_qa_generator,
    "pseudo_qa": adapt.run_pseudo_qa,
    "vqa": adapt.run_vqa,
    "baselines": adapt.run_baselines,
    "evaluate": evaluate.run,
    "report": report.run,
}
