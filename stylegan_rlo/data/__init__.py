"""Datasets: reading image folders and ZIPs (dataset) and building them (dataset_tool)."""
