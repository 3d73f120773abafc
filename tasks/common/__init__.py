"""What every task's model and data path share: the backbone config section and builder, image reading,
and which files in a data folder count."""
