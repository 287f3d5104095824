"""The admin API of the login_server: HTTP in front, AdminCall links behind."""
