"""`python -m comfy_driver.cli`: the command line."""

from comfy_driver.cli import main

main()
