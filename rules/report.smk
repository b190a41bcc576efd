rule report:
    input:
        aggregates=lambda w: [
            f"results/{w.dataset}/aggregates/{m}/{s}.csv" for m, s in aggregated_sets()
        ],
        subsets=lambda w: [
            f"results/{w.dataset}/aggregates/{m}/{s}.{subset}.csv"
            for m, s, subset in subset_aggregates()
        ],
        paths=lambda w: [
            f"results/{w.dataset}/paths/{m}/{s}.csv" for m, s in measurements()
        ],
        mi=lambda w: [f"results/{w.dataset}/mi/{m}/{s}.h5" for m, s in measurements()],
        sets=adversarial_sets,
        tables=[
            "results/{dataset}/tables/attacks.csv",
            "results/{dataset}/tables/transferability.csv",
        ],
        models=lambda w: [f"results/{w.dataset}/models/{m}.json" for m in MODELS],
        defense=lambda w: defense_outputs(w.dataset),
        seed001=lambda w: seed001_outputs(w.dataset),
    output:
        html=report(
            "results/{dataset}/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        findings="results/{dataset}/findings.json",
        tables=report(
            directory("results/{dataset}/tables/report"),
            patterns=["{name}.csv"],
            caption="../report/table.rst",
            category="Tables",
        ),
        figures=report(
            directory("results/{dataset}/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        "results/{dataset}/logs/report.log",
    benchmark:
        "results/{dataset}/benchmarks/report.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code("report.py"),
        study=report_params,
        seed=config["seed"],
    script:
        "../workflow_scripts/report.py"
