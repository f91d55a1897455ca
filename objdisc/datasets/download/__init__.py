"""Getting datasets onto disk: sources, downloads, safe extraction, COCO20k, status."""
