from workbench.entry import run

run()
