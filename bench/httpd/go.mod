module tunnel.bench/httpd

go 1.21
