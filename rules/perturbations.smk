# Seed 001's perturbation statistics of every adversarial set and its average-adversarial grid
# (docs/method.md, "Perturbation statistics"; advflow.perturbations). Its dropout vote is a detector of the
# defense stage (rules/defenses.smk).


rule perturbation_stats:
    input:
        sets=lambda w: [path for _, path, _ in perturbation_sets(w.dataset)],
        seeds=lambda w: sorted({seeds for _, _, seeds in perturbation_sets(w.dataset)}),
    output:
        directory("results/{dataset}/seed001/perturbations"),
    log:
        "results/{dataset}/logs/seed001/perturbations.log",
    benchmark:
        "results/{dataset}/benchmarks/seed001/perturbations.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code("perturbation_stats.py"),
        sets=lambda w: perturbation_sets(w.dataset),
        histograms=lambda w: [
            n for n, _ in study_sets_on(w.dataset, PERTURBATIONS["model"])
        ],
    script:
        "../workflow_scripts/perturbation_stats.py"


rule average_grid:
    input:
        data="data/{dataset}.h5",
        model=lambda w: f"results/{w.dataset}/models/{PERTURBATIONS['model']}.pt",
    output:
        grid="results/{dataset}/seed001/grid.h5",
        figures=directory("results/{dataset}/seed001/grid"),
    log:
        "results/{dataset}/logs/seed001/grid.log",
    benchmark:
        "results/{dataset}/benchmarks/seed001/grid.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("average_grid"),
    params:
        code=code("average_grid.py"),
        settings=lambda w: canonical(PERTURBATIONS["grid"]),
        pair=lambda w: PERTURBATIONS["pair"],
        seed=config["seed"],
    script:
        "../workflow_scripts/average_grid.py"
