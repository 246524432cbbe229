"""GO enrichment of feature-associated genes: gene sets, differential expression, the gene
lists of each feature, the enrichment statistics, the gseapy check, annotation, recovery of
planted terms and figures."""
