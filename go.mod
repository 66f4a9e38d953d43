module github.com/cri-mini/cri-mini

go 1.26
