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
        model="|".join(TRAINED_FROM_SCRATCH),
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
    params:
        code=code("train_model.py"),
        settings=train_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_model.py"


rule train_distillation_teacher:
    input:
        data="data/{dataset}.h5",
    output:
        checkpoint="results/{dataset}/models/distilled_teacher.pt",
        record="results/{dataset}/models/distilled_teacher.json",
    log:
        "results/{dataset}/logs/train/distilled_teacher.log",
    benchmark:
        "results/{dataset}/benchmarks/train/distilled_teacher.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
    params:
        code=code("train_teacher.py"),
        settings=distill_teacher_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_teacher.py"


rule distill:
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
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
    params:
        code=code("distill.py"),
        settings=distilled_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/distill.py"


rule compress:
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
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
    params:
        code=code("compress.py"),
        settings=compressed_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/compress.py"


rule ensemble:
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
    conda:
        "../envs/advflow.yaml"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(),
    params:
        code=code("ensemble.py"),
        settings=ensemble_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/ensemble.py"
