DROP TABLE server_functions;
