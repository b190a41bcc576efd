# The training rules (advflow.models.recipes), written once: every model is trained by train_model's directives,
# and the others differ only in their inputs, outputs, logs, settings and script. `use rule ... with:` cannot
# change `script:`, so the script is a param that the script path names.
rule train_model:
    input:
        data="data/{dataset}.h5",
    output:
        checkpoint="results/{dataset}/models/{model}.pt",
        record="results/{dataset}/models/{model}.json",
    log:
        "results/{dataset}/logs/train/{model}.log",
    benchmark:
        "results/{dataset}/benchmarks/train/{model}.tsv"
    wildcard_constraints:
        model="|".join([*TRAINED_FROM_SCRATCH, *USER_TRAINED]),
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("train_model"),
    params:
        script="train_model.py",
        code=code("train_model.py"),
        settings=train_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/{params.script}"


use rule train_model as train_distillation_teacher with:
    output:
        checkpoint="results/{dataset}/models/distilled_teacher.pt",
        record="results/{dataset}/models/distilled_teacher.json",
    log:
        "results/{dataset}/logs/train/distilled_teacher.log",
    benchmark:
        "results/{dataset}/benchmarks/train/distilled_teacher.tsv"
    params:
        script="train_teacher.py",
        code=code("train_teacher.py"),
        settings=distill_teacher_settings,


use rule train_model as distill with:
    input:
        data="data/{dataset}.h5",
        teacher="results/{dataset}/models/distilled_teacher.pt",
    output:
        checkpoint="results/{dataset}/models/distilled.pt",
        record="results/{dataset}/models/distilled.json",
        soft_labels="results/{dataset}/models/distilled_soft_labels.h5",
    log:
        "results/{dataset}/logs/train/distilled.log",
    benchmark:
        "results/{dataset}/benchmarks/train/distilled.tsv"
    params:
        script="distill.py",
        code=code("distill.py"),
        settings=distilled_settings,


use rule train_model as compress with:
    input:
        data="data/{dataset}.h5",
        base="results/{dataset}/models/good_init.pt",
    output:
        checkpoint="results/{dataset}/models/compressed.pt",
        record="results/{dataset}/models/compressed.json",
        rounds="results/{dataset}/models/compressed_trimming.csv",
    log:
        "results/{dataset}/logs/train/compressed.log",
    benchmark:
        "results/{dataset}/benchmarks/train/compressed.tsv"
    params:
        script="compress.py",
        code=code("compress.py"),
        settings=compressed_settings,


use rule train_model as ensemble with:
    input:
        data="data/{dataset}.h5",
        members=ensemble_members,
    output:
        checkpoint="results/{dataset}/models/ensemble.pt",
        record="results/{dataset}/models/ensemble.json",
    log:
        "results/{dataset}/logs/train/ensemble.log",
    benchmark:
        "results/{dataset}/benchmarks/train/ensemble.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("ensemble"),
    params:
        script="ensemble.py",
        code=code("ensemble.py"),
        settings=ensemble_settings,


# A model of the user's with a checkpoint: loaded and checked, never trained (README, "Your own model and data").
# Its checkpoint is not an input file: its content's SHA-256 is a param, so touching it reruns nothing.
use rule train_model as import_model with:
    output:
        checkpoint="results/{dataset}/models/{model}.pt",
        record="results/{dataset}/models/{model}.json",
    log:
        "results/{dataset}/logs/train/{model}.log",
    benchmark:
        "results/{dataset}/benchmarks/train/{model}.tsv"
    wildcard_constraints:
        model="|".join(USER_LOADED) or "(?!)",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("import_model"),
    params:
        script="import_model.py",
        code=code("import_model.py"),
        settings=user_model_params,
        seed=config["seed"],
