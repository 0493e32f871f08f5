"""The command line: arguments, the commands (main, deploy), what they print (display), and GitHub
Actions' job matrices and step summary (github). The only place that turns errors into exit codes."""
