"""Information flow (rules/information.smk): feature maps, mutual information, the MI stage,
information paths, their aggregates and the paired shifts the report decides with."""
