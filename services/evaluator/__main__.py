from services.cli import main

main(["evaluator", *__import__("sys").argv[1:]])
