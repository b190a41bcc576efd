"""The models of the study: architectures, training, Network Trimming and the recipes of the
training rules (rules/models.smk)."""
