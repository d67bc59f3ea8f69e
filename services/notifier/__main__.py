from services.cli import main

main(["notifier", *__import__("sys").argv[1:]])
