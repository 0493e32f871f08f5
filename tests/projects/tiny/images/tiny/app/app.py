print("tiny app, version 1")
