module quiver

go 1.21
