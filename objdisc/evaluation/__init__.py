"""Scoring: box conventions, CorLoc, scoring any results file, COCO export."""
