require 'fileutils'

# Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
# folder (/kubeless, an emptyDir the pod may write to); returns both.
def handler(event, context)
  FileUtils.mkdir_p('notes')
  ['data.txt', 'notes/log.txt'].each { |path| File.open(path, 'a') { |f| f.write(event[:data]) } }
  File.read('data.txt').delete("\n") + '|' + File.read('notes/log.txt')
end
