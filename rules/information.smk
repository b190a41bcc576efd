rule features:
    input:
        model="results/{dataset}/models/{model}.pt",
        inputs=measured_set,
    output:
        "results/{dataset}/features/{model}/{set}.h5",
    log:
        "results/{dataset}/logs/features/{model}/{set}.log",
    benchmark:
        "results/{dataset}/benchmarks/features/{model}/{set}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("features"),
    params:
        code=code("features.py"),
        storage=features_params,
    script:
        "../workflow_scripts/features.py"


rule mi:
    input:
        "results/{dataset}/features/{model}/{set}.h5",
    output:
        mi="results/{dataset}/mi/{model}/{set}.h5",
        paths="results/{dataset}/paths/{model}/{set}.csv",
    log:
        "results/{dataset}/logs/mi/{model}/{set}.log",
    benchmark:
        "results/{dataset}/benchmarks/mi/{model}/{set}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("mi"),
    params:
        code=code("mi.py"),
        buckets=MI["buckets"],
        bias_correction=MI["bias_correction"],
        seed=config["seed"],
    script:
        "../workflow_scripts/mi.py"


rule aggregate:
    input:
        paths="results/{dataset}/paths/{model}/{set}.csv",
        mi="results/{dataset}/mi/{model}/{set}.h5",
    output:
        "results/{dataset}/aggregates/{model}/{set}.csv",
    log:
        "results/{dataset}/logs/aggregate/{model}/{set}.log",
    benchmark:
        "results/{dataset}/benchmarks/aggregate/{model}/{set}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
        set="[^/.]+@[^/.]+|normal_train|normal_test",
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("aggregate.py"),
        gp=gp_params,
        seed=config["seed"],
    script:
        "../workflow_scripts/aggregate.py"


rule aggregate_subsets:
    input:
        paths="results/{dataset}/paths/{model}/{attack}@{target}.csv",
        mi="results/{dataset}/mi/{model}/{attack}@{target}.h5",
        adversarial="results/{dataset}/adv/{target}/{attack}.h5",
    output:
        transferable="results/{dataset}/aggregates/{model}/{attack}@{target}.transferable.csv",
        non_transferable="results/{dataset}/aggregates/{model}/{attack}@{target}.non_transferable.csv",
    log:
        "results/{dataset}/logs/aggregate/{model}/{attack}@{target}.subsets.log",
    benchmark:
        "results/{dataset}/benchmarks/aggregate/{model}/{attack}@{target}.subsets.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
        attack="[^/.@]+",
        target="[^/.@]+",
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("aggregate_subsets.py"),
        gp=gp_params,
        seed=config["seed"],
    script:
        "../workflow_scripts/aggregate_subsets.py"
