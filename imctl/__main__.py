from imctl.cli import main

main(prog_name="imctl")
