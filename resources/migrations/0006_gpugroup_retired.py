from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('resources', '0005_host_slots'),
    ]

    operations = [
        migrations.AddField(
            model_name='gpugroup',
            name='retired',
            field=models.BooleanField(default=False, help_text="Dropped from the deployment's host configuration (configure_hpc): never handed out again, disabled as soon as it is free. Listing it again puts it back in service."),
        ),
    ]
