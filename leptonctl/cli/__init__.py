"""Thin Typer command-line interface: parse options, call one service, render."""
