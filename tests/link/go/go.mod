module quiver.example/link

go 1.21
